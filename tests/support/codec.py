"""Moved to tooling/codec.py (shared with the bench); this shim keeps old imports working."""

from __future__ import annotations

from tooling.codec import TEST_CODEC_ENV, TEST_DATA_CONVERTER, TEST_KEY_ID, converter_for

__all__ = ["TEST_CODEC_ENV", "TEST_DATA_CONVERTER", "TEST_KEY_ID", "converter_for"]
