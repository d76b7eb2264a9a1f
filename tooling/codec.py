"""The codec key ring of every test stack, and the data converter tests read it with.

A fixed, test-only key, so that the histories `make histories` records (encrypted with it)
replay in the replay guard on any machine. It protects nothing: never use it elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import json

from pydantic import SecretStr
from temporalio.converter import DataConverter

from common.codec import data_converter
from common.settings import Settings

TEST_KEY_ID = "test-key-1"
_TEST_KEY = base64.b64encode(hashlib.sha256(b"sagaworks test codec key 1").digest()).decode()

# What run_stack passes to every process it starts.
TEST_CODEC_ENV = {
    "SAGAWORKS_CODEC_KEYS": json.dumps({TEST_KEY_ID: _TEST_KEY}),
    "SAGAWORKS_CODEC_ACTIVE_KEY_ID": TEST_KEY_ID,
}


def converter_for(env: dict[str, str]) -> DataConverter:
    """The converter of a process started with `env` (its SAGAWORKS_CODEC_* entries)."""
    return data_converter(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            codec_keys=SecretStr(env["SAGAWORKS_CODEC_KEYS"]),
            codec_active_key_id=env.get("SAGAWORKS_CODEC_ACTIVE_KEY_ID"),
        )
    )


TEST_DATA_CONVERTER = converter_for(TEST_CODEC_ENV)
