"""The connection arguments the settings produce: dev server, cluster with its own CA and
mTLS, Temporal Cloud with an API key. No real cluster: what `Client.connect` is given.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.service import TLSConfig

from common.settings import Settings
from common.temporal import connect, connect_options
from tests.support.codec import TEST_CODEC_ENV


def pem_pair(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key, as a cluster's CA or a client would hold."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def make_settings(**values: Any) -> Settings:
    """Settings from the environment and `values` only, never from a developer's `.env`."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    ca_cert, _ = pem_pair("sagaworks test CA")
    client_cert, client_key = pem_pair("sagaworks worker")
    files = {"ca": ca_cert, "cert": client_cert, "key": client_key}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def test_the_dev_server_by_default_without_tls() -> None:
    assert connect_options(make_settings()) == {
        "target_host": "127.0.0.1:7233",
        "namespace": "default",
        "api_key": None,
        "tls": False,
    }


def test_temporal_cloud_with_an_api_key_uses_tls_and_sends_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_ADDRESS", "eu-west-1.aws.api.temporal.io:7233")
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_NAMESPACE", "sagaworks.a1b2c")
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_API_KEY", "cloud-key-123")
    chosen = make_settings()

    assert connect_options(chosen) == {
        "target_host": "eu-west-1.aws.api.temporal.io:7233",
        "namespace": "sagaworks.a1b2c",
        "api_key": "cloud-key-123",
        "tls": True,  # the system's roots: Cloud's certificates are public ones
    }
    assert "cloud-key-123" not in repr(chosen)  # a SecretStr


def test_a_cluster_with_its_own_ca_and_mtls_client_certificates(
    monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]
) -> None:
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_ADDRESS", "10.0.0.7:7233")
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_NAMESPACE", "sagaworks-prod")
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_TLS_CA_FILE", str(tls_files["ca"]))
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_TLS_CERT_FILE", str(tls_files["cert"]))
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_TLS_KEY_FILE", str(tls_files["key"]))
    monkeypatch.setenv("SAGAWORKS_TEMPORAL_TLS_SERVER_NAME", "temporal.internal.example")

    options = connect_options(make_settings())

    assert options["target_host"] == "10.0.0.7:7233"
    assert options["namespace"] == "sagaworks-prod"
    assert options["api_key"] is None
    assert options["tls"] == TLSConfig(
        server_root_ca_cert=tls_files["ca"].read_bytes(),
        domain="temporal.internal.example",
        client_cert=tls_files["cert"].read_bytes(),
        client_private_key=tls_files["key"].read_bytes(),
    )


def test_a_custom_ca_alone_verifies_the_server_without_client_certificates(
    tls_files: dict[str, Path],
) -> None:
    chosen = make_settings(temporal_tls_ca_file=tls_files["ca"])
    assert connect_options(chosen)["tls"] == TLSConfig(
        server_root_ca_cert=tls_files["ca"].read_bytes()
    )


def test_a_client_certificate_without_its_key_is_refused(tls_files: dict[str, Path]) -> None:
    chosen = make_settings(temporal_tls_cert_file=tls_files["cert"])
    with pytest.raises(ValueError, match="TLS_CERT_FILE and SAGAWORKS_TEMPORAL_TLS_KEY_FILE"):
        connect_options(chosen)


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    chosen = make_settings(temporal_tls_ca_file=tmp_path / "absent.pem")
    with pytest.raises(ValueError, match="SAGAWORKS_TEMPORAL_TLS_CA_FILE=.*absent.pem"):
        connect_options(chosen)


async def test_connect_hands_those_arguments_to_the_client(
    monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, Path]
) -> None:
    monkeypatch.setenv("SAGAWORKS_CODEC_KEYS", TEST_CODEC_ENV["SAGAWORKS_CODEC_KEYS"])
    monkeypatch.setenv(
        "SAGAWORKS_CODEC_ACTIVE_KEY_ID", TEST_CODEC_ENV["SAGAWORKS_CODEC_ACTIVE_KEY_ID"]
    )
    chosen = make_settings(
        temporal_address="temporal.internal.example:7233",
        temporal_namespace="sagaworks-prod",
        temporal_tls_ca_file=tls_files["ca"],
        temporal_tls_cert_file=tls_files["cert"],
        temporal_tls_key_file=tls_files["key"],
    )
    # Lazy: nothing is dialled, the client only holds its configuration.
    client = await connect(chosen, lazy=True)

    config = client.service_client.config
    assert client.namespace == "sagaworks-prod"
    assert config.target_host == "temporal.internal.example:7233"
    assert config.tls == connect_options(chosen)["tls"]
