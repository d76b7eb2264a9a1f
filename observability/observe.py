"""`make observe`: Debian's Prometheus over a running `make up`, with the shipped alert rules.

It gives Prometheus its own operator key (name `prometheus`, in the file prometheus.yml
names, owner-only), keeps the time series under data/prometheus/, and runs in the
foreground until Ctrl-C. Without the `prometheus` binary it says how to install it.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from pathlib import Path

from api.keystore import KeyStore
from api.principals import Role
from common.settings import Settings, get_settings

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "prometheus.yml"
# Where prometheus.yml's `credentials_file` points (relative to it: ../data/prometheus/).
STATE = HERE.parent / "data" / "prometheus"
KEY_FILE = STATE / "operator.key"
KEY_NAME = "prometheus"
DEFAULT_LISTEN = "127.0.0.1:9090"

INSTALL_HINT = """\
make observe needs Prometheus, which is not installed here. On Debian or Ubuntu:

    sudo apt-get install prometheus

(the package's own service may start on :9090; `sudo systemctl disable --now prometheus`
stops it, or run `make observe PROMETHEUS_LISTEN=127.0.0.1:9091`). Then, with `make up`
running in another terminal, run `make observe` again."""


def find_prometheus() -> str | None:
    found = shutil.which("prometheus")
    if found is None and os.access("/usr/bin/prometheus", os.X_OK):
        found = "/usr/bin/prometheus"
    return found


def ensure_key(settings: Settings, path: Path = KEY_FILE) -> str:
    """The key file's token if it still authenticates as an operator, else a new one."""
    store = KeyStore(settings.database_url("gateway"))
    if path.exists():
        token = path.read_text().strip()
        principal = store.authenticate(token) if token else None
        if principal is not None and principal.role == Role.OPERATOR:
            return token
    token = store.issue(Role.OPERATOR, name=KEY_NAME).token
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token)
    return token


def _api_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    binary = find_prometheus()
    if binary is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    settings = get_settings()
    ensure_key(settings)
    listen = os.environ.get("PROMETHEUS_LISTEN") or DEFAULT_LISTEN
    if not _api_answers(settings.public_api_url.rstrip("/")):
        print(
            f"observe: the API at {settings.public_api_url} does not answer yet; start "
            "`make up` (Prometheus shows its targets down until it does).",
            file=sys.stderr,
        )
    print(
        f"observe: Prometheus at http://{listen} (alerts: /alerts, targets: /targets); "
        "Ctrl-C stops it.",
        flush=True,
    )
    args = [
        binary,
        f"--config.file={CONFIG}",
        f"--storage.tsdb.path={STATE / 'tsdb'}",
        f"--web.listen-address={listen}",
    ]
    os.execv(binary, args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
