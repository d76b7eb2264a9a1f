"""`python -m api.demo_keys`: the demo's two keys, made once by `make up`.

One customer key (`c-1`) and one operator key, kept in `data/demo-keys.json` (git-ignored,
readable by this user only) so the banner can print them on every start. A key that no
longer works (say the gateway database was reset) is replaced.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from api.keystore import KeyStore
from api.principals import Role
from common.settings import Settings, get_settings

DEMO_CUSTOMER = "c-1"
DEMO_OPERATOR = "demo-operator"


def demo_keys_path(settings: Settings) -> Path:
    return settings.data_dir / "demo-keys.json"


def ensure(settings: Settings) -> dict[str, str]:
    path = demo_keys_path(settings)
    store = KeyStore(settings.database_url("gateway"))
    keys: dict[str, str] = {}
    if path.exists():
        keys = json.loads(path.read_text())
    if not _works(store, keys.get("customer"), Role.CUSTOMER):
        keys["customer"] = store.issue(Role.CUSTOMER, customer_id=DEMO_CUSTOMER).token
        keys["customer_id"] = DEMO_CUSTOMER
    if not _works(store, keys.get("operator"), Role.OPERATOR):
        keys["operator"] = store.issue(Role.OPERATOR, name=DEMO_OPERATOR).token
    path.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only from the first byte: the file holds live credentials.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(keys, out, indent=2)
    return keys


def _works(store: KeyStore, token: str | None, role: Role) -> bool:
    principal = store.authenticate(token) if token else None
    return principal is not None and principal.role == role


if __name__ == "__main__":
    ensure(get_settings())
    print(f"demo keys in {demo_keys_path(get_settings())}", file=sys.stderr)
