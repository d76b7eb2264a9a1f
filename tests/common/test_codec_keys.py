"""The key file and its command; processes that refuse to start without a key."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from temporalio.converter import DataConverter

from common.codec import EncryptionCodec
from common.codec_keys import ensure_key_file, read_key_file, rotate_key_file
from tests.support.stack import REPO_ROOT, free_port

PLAIN = DataConverter.default.payload_converter.to_payloads([{"card_token": "tok_x"}])[0]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a process run here, with no codec setting inherited from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWORKS_")}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "SAGAWORKS_DATA_DIR": str(tmp_path), **extra}


def run(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,  # no .env from the repo
        env=clean_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ensure_creates_one_private_key_once(tmp_path: Path) -> None:
    path = tmp_path / "codec-keys.json"
    ring, created = ensure_key_file(path)
    assert created and len(ring.keys) == 1 and ring.active_key_id in ring.keys
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = ensure_key_file(path)
    assert not created_again and again == ring  # never regenerated: old payloads stay readable


async def test_rotation_adds_an_active_key_and_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "codec-keys.json"
    old, _ = ensure_key_file(path)
    [before] = await EncryptionCodec(old).encode([PLAIN])
    rotated = rotate_key_file(path)
    assert rotated.active_key_id != old.active_key_id
    assert rotated.keys[old.active_key_id] == old.keys[old.active_key_id]
    assert read_key_file(path) == rotated
    codec = EncryptionCodec(read_key_file(path))
    [after] = await codec.encode([PLAIN])
    assert after.metadata["encryption-key-id"] == rotated.active_key_id.encode()
    assert await codec.decode([before, after]) == [PLAIN, PLAIN]


def test_the_command_ensures_rotates_and_shows_ids_only(tmp_path: Path) -> None:
    first = run(tmp_path, "-m", "common.codec_keys", "ensure")
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    assert "uses" in run(tmp_path, "-m", "common.codec_keys", "ensure").stdout
    assert run(tmp_path, "-m", "common.codec_keys", "rotate").returncode == 0
    ring = read_key_file(tmp_path / "codec-keys.json")
    shown = run(tmp_path, "-m", "common.codec_keys", "show").stdout
    assert len(ring.keys) == 2 and f"{ring.active_key_id} (active)" in shown
    for key in ring.keys.values():
        assert base64.b64encode(key).decode() not in shown


def test_new_prints_a_key_for_the_environment(tmp_path: Path) -> None:
    printed = run(tmp_path, "-m", "common.codec_keys", "new")
    [(key_id, key)] = json.loads(printed.stdout).items()
    assert len(base64.b64decode(key)) == 32
    # What it printed is a valid SAGAWORKS_CODEC_KEYS.
    shown = run(tmp_path, "-m", "common.codec_keys", "show", SAGAWORKS_CODEC_KEYS=printed.stdout)
    assert shown.stdout.strip() == f"{key_id} (active)"


def assert_refused(answer: subprocess.CompletedProcess[str]) -> None:
    output = answer.stdout + answer.stderr
    assert answer.returncode != 0, output
    assert "production needs a codec key" in output, output
    assert "Traceback" not in output, output
    assert len([line for line in output.splitlines() if "codec key" in line]) == 1, output


def test_a_production_worker_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    ensure_key_file(tmp_path / "codec-keys.json")  # a dev key file does not count
    assert_refused(run(tmp_path, "-m", "workers.inventory", SAGAWORKS_ENVIRONMENT="production"))


def test_the_production_api_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    command = ["-m", "uvicorn", "api.main:app", "--port", str(free_port())]
    answer = run(tmp_path, *command, SAGAWORKS_ENVIRONMENT="production")
    assert_refused(answer)
    assert "api refuses to start" in answer.stderr
