"""Who is calling: the principal an API key, a JWT or a browser session stands for."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    CUSTOMER = "customer"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    role: Role
    # Set for customers (the only customer they act as); None for operators.
    customer_id: str | None
    # Who it is, for the record: an operator's name, or the key or subject it came from.
    name: str
    # Where it came from: "key:<id>", "jwt:<issuer>" or "session:<key id>".
    source: str

    @property
    def is_operator(self) -> bool:
        return self.role == Role.OPERATOR

    @property
    def scope(self) -> str:
        """What idempotency keys, rate limits and stream caps are counted against.

        A customer is one scope whichever of their keys they use, so a retry made with a
        rotated key still finds the order its first attempt started.
        """
        if self.role == Role.CUSTOMER:
            return f"customer:{self.customer_id}"
        return f"operator:{self.name}"
