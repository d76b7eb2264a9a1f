"""Real credentials for tests and the bench: keys from the gateway's own key store, no bypass."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from api.keystore import KeyStore
from api.order_gateway import order_id_for
from api.principals import Role
from api.temporal_calls import IDEMPOTENCY_SECRET
from common.settings import Settings


def gateway_settings(env: Mapping[str, str]) -> Settings:
    """The settings a stack's API process sees for its gateway database."""
    return Settings(
        data_dir=Path(env["SAGAWORKS_DATA_DIR"]),
        gateway_database_url=env.get("SAGAWORKS_GATEWAY_DATABASE_URL") or None,
    )


def issue_key(
    env: Mapping[str, str],
    role: str = "operator",
    *,
    customer_id: str | None = None,
    name: str | None = None,
) -> str:
    """A new bearer token from the stack's key store, as `python -m api.keys create` makes."""
    store = KeyStore(gateway_settings(env).database_url("gateway"))
    return store.issue(Role(role), customer_id=customer_id, name=name).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# The scope of the operator key every test stack is given (tooling/stack.py).
STACK_OPERATOR_SCOPE = "operator:tests"


def order_id_for_key(
    env: Mapping[str, str], idempotency_key: str, scope: str = STACK_OPERATOR_SCOPE
) -> str:
    """The order ID the stack's API gives `idempotency_key` from `scope`, known in advance.

    Tests that must stop a saga's step before its POST returns need the ID first; it comes
    from the same keyed derivation, with the secret kept in the stack's gateway database.
    """
    secret = KeyStore(gateway_settings(env).database_url("gateway")).secret(IDEMPOTENCY_SECRET)
    return order_id_for(secret, scope, idempotency_key)
