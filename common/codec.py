"""Payload encryption: AES-256-GCM over every Temporal payload, keys from settings.

Temporal stores workflow and activity inputs, results, memos and (with the encoded failure
attributes) failure messages and stack traces as payloads. Encrypted here, the server, the
Web UI and `temporal workflow show` see only ciphertext, unless they read through the
codec endpoint (`api/routes/codec.py`), which needs an operator.

The format follows temporalio's samples-python `encryption` sample: the whole serialized
payload is encrypted, the result carries `encoding: binary/encrypted` and the key ID in
`encryption-key-id`, and the data is a 12-byte nonce followed by ciphertext and tag. The
key ID in every payload is what makes rotation possible: the active key encrypts, every
key in the ring still decrypts. Payloads without that encoding pass through on decode, so
histories recorded before encryption replay and stay readable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from common.codec_keys import CodecConfigError, KeyRing, parse_keys_json, read_key_file
from common.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12

__all__ = [
    "CodecConfigError",
    "CodecError",
    "EncryptionCodec",
    "KeyRing",
    "data_converter",
    "exit_unless_configured",
    "key_ring",
]


class CodecError(ValueError):
    """A payload that cannot be decrypted: unknown key ID, tampered, or malformed."""


class EncryptionCodec(PayloadCodec):
    def __init__(self, ring: KeyRing) -> None:
        super().__init__()
        self._active_key_id = ring.active_key_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in ring.keys.items()}

    @property
    def active_key_id(self) -> str:
        return self._active_key_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._active_key_id]
        key_id = self._active_key_id.encode()
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), None)
            encoded.append(
                Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=data)
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(payload) for payload in payloads]

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption (or by a codec-less client)
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(sorted(self._ciphers))
            raise CodecError(
                f"payload encrypted with unknown codec key id {key_id!r} (configured: {known})"
            )
        data = payload.data
        if len(data) <= NONCE_BYTES:
            raise CodecError(f"encrypted payload too short (key id {key_id!r})")
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise CodecError(
                f"encrypted payload failed authentication under key id {key_id!r}: "
                "tampered, or encrypted with another key of the same id"
            ) from None
        return Payload.FromString(plain)


def key_ring(settings: Settings) -> KeyRing:
    """The configured key ring, or a CodecConfigError that says what to set.

    `SAGAWORKS_CODEC_KEYS` wins. Without it, the key file: in development its default
    place (`data/codec-keys.json`, written by `make up`); in production only a file named
    explicitly by `SAGAWORKS_CODEC_KEY_FILE`, so production never runs on a dev key.
    Nothing here generates a key: processes starting at once would each make their own.
    """
    override = settings.codec_active_key_id
    if settings.codec_keys is not None:
        keys = parse_keys_json(settings.codec_keys.get_secret_value(), "SAGAWORKS_CODEC_KEYS")
        if override is None and len(keys) > 1:
            raise CodecConfigError(
                "SAGAWORKS_CODEC_ACTIVE_KEY_ID must name the key that encrypts "
                f"(SAGAWORKS_CODEC_KEYS holds {len(keys)})"
            )
        return KeyRing(override or next(iter(keys)), keys)
    if settings.environment == "production" and settings.codec_key_file is None:
        raise CodecConfigError(
            "production needs a codec key: set SAGAWORKS_CODEC_KEYS or SAGAWORKS_CODEC_KEY_FILE"
        )
    path = settings.codec_key_path
    if not path.exists():
        raise CodecConfigError(
            f"no codec key: {path} does not exist and SAGAWORKS_CODEC_KEYS is unset "
            "(`make up` or `python -m common.codec_keys ensure` creates a development key)"
        )
    ring = read_key_file(path)
    return KeyRing(override, ring.keys) if override else ring


def data_converter(settings: Settings) -> DataConverter:
    """What every client and worker converts with: encrypted payloads, encoded failures."""
    return DataConverter(
        payload_codec=EncryptionCodec(key_ring(settings)),
        # Failure messages and stack traces move into an encrypted payload too: an
        # exception's text can quote an order's data.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def exit_unless_configured(settings: Settings, process: str) -> None:
    """For entry points that cannot turn an exception into one line (uvicorn's lifespan)."""
    try:
        key_ring(settings)
    except CodecConfigError as err:
        print(f"{process} refuses to start: {err}", file=sys.stderr, flush=True)
        # Not SystemExit: the ASGI server would print it with a traceback.
        os._exit(2)
