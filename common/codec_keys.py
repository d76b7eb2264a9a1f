"""The codec key file, and `python -m common.codec_keys {ensure,rotate,new,show}`.

The key file is JSON, written with mode 0600:

    {"active_key_id": "key-20250601-3fa2c1",
     "keys": {"key-20250601-3fa2c1": "<base64 of 32 random bytes>", ...}}

Every key in it decrypts; the active one encrypts. `make up` runs `ensure` before any
process starts, so the API and the workers never race to create different keys.
`SAGAWORKS_CODEC_KEYS` (the same `keys` object, as one JSON string) replaces the file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

KEY_BYTES = 32  # AES-256-GCM
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class CodecConfigError(ValueError):
    """The key ring is missing or malformed: a process must not start with it."""


@dataclass(frozen=True)
class KeyRing:
    active_key_id: str
    # repr=False: a key ring printed in a log or a traceback never shows key material.
    keys: dict[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.active_key_id not in self.keys:
            known = ", ".join(sorted(self.keys)) or "none"
            raise CodecConfigError(
                f"codec active key id {self.active_key_id!r} is not in the key ring ({known})"
            )


def new_key_id() -> str:
    return f"key-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def parse_keys(raw: object, origin: str) -> dict[str, bytes]:
    """`{"<key id>": "<base64 key>"}` to key bytes, or a CodecConfigError naming `origin`."""
    if not isinstance(raw, dict) or not raw:
        raise CodecConfigError(f"{origin}: expected a JSON object of key id -> base64 key")
    keys = {}
    for key_id, encoded in raw.items():
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise CodecConfigError(f"{origin}: bad key id {key_id!r} (letters, digits, . _ -)")
        try:
            key = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise CodecConfigError(f"{origin}: key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise CodecConfigError(
                f"{origin}: key {key_id!r} has {len(key)} bytes, AES-256 needs {KEY_BYTES}"
            )
        keys[key_id] = key
    return keys


def parse_keys_json(text: str, origin: str) -> dict[str, bytes]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        # The error text could quote key material: say where, not what.
        raise CodecConfigError(f"{origin}: not valid JSON") from None
    return parse_keys(raw, origin)


def read_key_file(path: Path) -> KeyRing:
    origin = f"codec key file {path}"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CodecConfigError(f"{origin} does not exist") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CodecConfigError(f"{origin}: unreadable ({type(err).__name__})") from None
    if not isinstance(document, dict):
        raise CodecConfigError(f"{origin}: expected a JSON object")
    keys = parse_keys(document.get("keys"), origin)
    active = document.get("active_key_id")
    if not isinstance(active, str):
        raise CodecConfigError(f"{origin}: missing active_key_id")
    return KeyRing(active, keys)


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Write atomically (a half-written key file would lose a key), readable by us only."""
    document = {
        "active_key_id": ring.active_key_id,
        "keys": {key_id: base64.b64encode(key).decode() for key_id, key in ring.keys.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(document, out, indent=2)
        out.write("\n")
    os.replace(scratch, path)


def ensure_key_file(path: Path) -> tuple[KeyRing, bool]:
    """The key file's ring, creating it with one fresh key when absent; True if created."""
    if path.exists():
        return read_key_file(path), False
    key_id = new_key_id()
    ring = KeyRing(key_id, {key_id: new_key()})
    write_key_file(path, ring)
    return ring, True


def rotate_key_file(path: Path) -> KeyRing:
    """Add a fresh key and make it active; the old keys stay, so old payloads still decrypt."""
    ring = read_key_file(path)
    key_id = new_key_id()
    while key_id in ring.keys:
        key_id = new_key_id()
    rotated = KeyRing(key_id, {**ring.keys, key_id: new_key()})
    write_key_file(path, rotated)
    return rotated


def _main(argv: list[str] | None = None) -> int:
    # Imported here: Settings is only needed by the command, not by the codec.
    from common.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m common.codec_keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure", help="create the key file with one key, unless keys exist")
    commands.add_parser("rotate", help="add a new key to the key file and make it active")
    commands.add_parser("new", help="print a new key as JSON for SAGAWORKS_CODEC_KEYS")
    commands.add_parser("show", help="list the configured key ids (never the keys)")
    args = parser.parse_args(argv)
    settings = get_settings()
    path = settings.codec_key_path
    try:
        if args.command == "ensure":
            if settings.codec_keys is not None:
                print("codec keys come from SAGAWORKS_CODEC_KEYS; no key file needed")
                return 0
            ring, created = ensure_key_file(path)
            verb = "created" if created else "uses"
            print(f"codec: {verb} {path} (active key {ring.active_key_id})")
        elif args.command == "rotate":
            ring = rotate_key_file(path)
            print(f"codec: {path} now encrypts with {ring.active_key_id}; restart every process")
        elif args.command == "new":
            key_id = new_key_id()
            print(json.dumps({key_id: base64.b64encode(new_key()).decode()}))
        else:
            from common.codec import key_ring

            ring = key_ring(settings)
            for key_id in sorted(ring.keys):
                print(f"{key_id}{' (active)' if key_id == ring.active_key_id else ''}")
    except CodecConfigError as err:
        print(f"codec: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
