"""The payload codec: AES-GCM round trip, rotation, clear errors, plain payloads untouched."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from common.codec import (
    ENCODING,
    KEY_ID_METADATA,
    CodecConfigError,
    CodecError,
    EncryptionCodec,
    KeyRing,
    data_converter,
    key_ring,
)
from common.codec_keys import new_key, write_key_file
from common.settings import Settings

CARD = "tok_visa_4242"
ADDRESS = "Unter den Linden 1"
PLAIN = DataConverter.default.payload_converter.to_payloads(
    [{"card_token": CARD, "line1": ADDRESS}]
)[0]


def ring(active: str, *ids: str) -> KeyRing:
    return KeyRing(active, {key_id: KEYS[key_id] for key_id in {active, *ids}})


KEYS = {key_id: new_key() for key_id in ("k1", "k2", "k3")}


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[call-arg, arg-type]


def keys_json(*ids: str) -> SecretStr:
    return SecretStr(json.dumps({i: base64.b64encode(KEYS[i]).decode() for i in ids}))


async def test_round_trip_hides_the_plaintext() -> None:
    codec = EncryptionCodec(ring("k1"))
    [encrypted] = await codec.encode([PLAIN])
    assert encrypted.metadata["encoding"] == ENCODING
    assert encrypted.metadata[KEY_ID_METADATA] == b"k1"
    raw = encrypted.SerializeToString()
    assert CARD.encode() not in raw and ADDRESS.encode() not in raw
    assert b"json/plain" not in raw  # the original metadata is inside the ciphertext too
    [decrypted] = await codec.decode([encrypted])
    assert decrypted == PLAIN


async def test_each_encryption_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec(ring("k1"))
    first, second = await codec.encode([PLAIN, PLAIN])
    assert first.data != second.data


async def test_rotation_keeps_old_payloads_readable() -> None:
    old = EncryptionCodec(ring("k1"))
    rotated = EncryptionCodec(ring("k2", "k1"))
    [before] = await old.encode([PLAIN])
    [after] = await rotated.encode([PLAIN])
    assert after.metadata[KEY_ID_METADATA] == b"k2"
    assert await rotated.decode([before, after]) == [PLAIN, PLAIN]
    # A process still on the old ring cannot read the new key's payloads, and says why.
    with pytest.raises(CodecError, match="unknown codec key id 'k2'.*configured: k1"):
        await old.decode([after])


async def test_unknown_key_id_is_a_clear_error() -> None:
    [encrypted] = await EncryptionCodec(ring("k3")).encode([PLAIN])
    with pytest.raises(CodecError, match="unknown codec key id 'k3'"):
        await EncryptionCodec(ring("k1", "k2")).decode([encrypted])


async def test_tampered_ciphertext_is_refused() -> None:
    codec = EncryptionCodec(ring("k1"))
    [encrypted] = await codec.encode([PLAIN])
    flipped = bytearray(encrypted.data)
    flipped[-1] ^= 0x01
    tampered = Payload(metadata=dict(encrypted.metadata), data=bytes(flipped))
    with pytest.raises(CodecError, match="failed authentication under key id 'k1'"):
        await codec.decode([tampered])


async def test_relabelled_key_id_is_refused() -> None:
    codec = EncryptionCodec(ring("k1", "k2"))
    [encrypted] = await codec.encode([PLAIN])
    relabelled = Payload(
        metadata={"encoding": ENCODING, KEY_ID_METADATA: b"k2"}, data=encrypted.data
    )
    with pytest.raises(CodecError, match="failed authentication under key id 'k2'"):
        await codec.decode([relabelled])


async def test_truncated_payload_is_refused() -> None:
    short = Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: b"k1"}, data=b"abc")
    with pytest.raises(CodecError, match="too short"):
        await EncryptionCodec(ring("k1")).decode([short])


async def test_plain_payloads_pass_through_on_decode() -> None:
    # Histories written before encryption replay and stay readable.
    null = DataConverter.default.payload_converter.to_payloads([None])[0]
    assert await EncryptionCodec(ring("k1")).decode([PLAIN, null]) == [PLAIN, null]


async def test_data_converter_encodes_failure_messages_and_traces(tmp_path: Path) -> None:
    converter = data_converter(settings(tmp_path, codec_keys=keys_json("k1")))
    failure = Failure()
    try:
        raise ApplicationError(f"card {CARD} refused", type="PaymentDeclined")
    except ApplicationError as err:
        await converter.encode_failure(err, failure)
    raw = failure.SerializeToString()
    assert CARD.encode() not in raw
    assert failure.message == "Encoded failure" and failure.stack_trace == ""
    assert failure.encoded_attributes.metadata["encoding"] == ENCODING
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == f"card {CARD} refused"


async def test_data_converter_round_trips_values(tmp_path: Path) -> None:
    converter = data_converter(settings(tmp_path, codec_keys=keys_json("k1")))
    [payload] = await converter.encode([{"card_token": CARD}])
    assert CARD.encode() not in payload.SerializeToString()
    assert await converter.decode([payload]) == [{"card_token": CARD}]


def test_key_ring_from_settings_one_key(tmp_path: Path) -> None:
    found = key_ring(settings(tmp_path, codec_keys=keys_json("k1")))
    assert found.active_key_id == "k1" and found.keys == {"k1": KEYS["k1"]}


def test_several_keys_need_an_active_one(tmp_path: Path) -> None:
    with pytest.raises(CodecConfigError, match="SAGAWORKS_CODEC_ACTIVE_KEY_ID must name"):
        key_ring(settings(tmp_path, codec_keys=keys_json("k1", "k2")))
    found = key_ring(settings(tmp_path, codec_keys=keys_json("k1", "k2"), codec_active_key_id="k2"))
    assert found.active_key_id == "k2" and set(found.keys) == {"k1", "k2"}


def test_active_key_must_be_in_the_ring(tmp_path: Path) -> None:
    with pytest.raises(CodecConfigError, match="'k9' is not in the key ring"):
        key_ring(settings(tmp_path, codec_keys=keys_json("k1"), codec_active_key_id="k9"))


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"k1": "%%%"}', "not valid base64"),
        ('{"k1": "c2hvcnQ="}', "has 5 bytes, AES-256 needs 32"),
        ('{"bad id!": "c2hvcnQ="}', "bad key id"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_them(
    tmp_path: Path, raw: str, complaint: str
) -> None:
    with pytest.raises(CodecConfigError, match=complaint) as refused:
        key_ring(settings(tmp_path, codec_keys=SecretStr(raw)))
    assert "c2hvcnQ=" not in str(refused.value)


def test_development_falls_back_to_the_key_file(tmp_path: Path) -> None:
    with pytest.raises(CodecConfigError, match="codec-keys.json does not exist.*make up"):
        key_ring(settings(tmp_path))
    write_key_file(tmp_path / "codec-keys.json", ring("k2", "k1"))
    found = key_ring(settings(tmp_path))
    assert found.active_key_id == "k2" and set(found.keys) == {"k1", "k2"}
    # The environment's choice of active key wins over the file's.
    assert key_ring(settings(tmp_path, codec_active_key_id="k1")).active_key_id == "k1"


def test_production_never_uses_the_default_key_file(tmp_path: Path) -> None:
    write_key_file(tmp_path / "codec-keys.json", ring("k1"))
    with pytest.raises(CodecConfigError, match="production needs a codec key"):
        key_ring(settings(tmp_path, environment="production"))
    explicit = settings(
        tmp_path, environment="production", codec_key_file=tmp_path / "codec-keys.json"
    )
    assert key_ring(explicit).active_key_id == "k1"
    assert (
        key_ring(
            settings(tmp_path, environment="production", codec_keys=keys_json("k3"))
        ).active_key_id
        == "k3"
    )


def test_key_material_never_shows_in_a_repr(tmp_path: Path) -> None:
    secret = keys_json("k1")
    configured = settings(tmp_path, codec_keys=secret)
    encoded = json.loads(secret.get_secret_value())["k1"]
    assert encoded not in repr(configured)
    assert encoded not in repr(key_ring(configured))
    assert repr(KEYS["k1"]) not in repr(key_ring(configured))
