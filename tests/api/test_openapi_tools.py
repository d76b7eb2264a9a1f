"""The OpenAPI document reads the same in the tools users point at it as in the API.

A discriminator that maps two tags to one schema is legal OpenAPI, but several tools keep
only the last tag per schema (schemathesis 4.32 among them): they would call
`{"action": "trip", ...}` invalid, and the contract test then failed on an answer of 200.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.core.jsonschema import make_validator

from api.main import create_app

VALID_OPERATIONS = [
    {"action": "trip", "service": "payments", "reason": "drill"},
    {"action": "reset", "service": "payments"},
    {"action": "pause_intake", "reason": "drill"},
    {"action": "resume_intake"},
]


def _discriminators(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, str]]]:
    if isinstance(node, dict):
        if "discriminator" in node:
            yield where, node["discriminator"].get("mapping", {})
        for key, value in node.items():
            yield from _discriminators(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _discriminators(value, f"{where}/{index}")


def test_every_discriminator_tag_has_a_schema_of_its_own() -> None:
    mappings = list(_discriminators(create_app().openapi()))
    assert mappings, "the operate body is a discriminated union"
    for where, mapping in mappings:
        assert len(set(mapping.values())) == len(mapping), (where, mapping)


@pytest.mark.parametrize("body", VALID_OPERATIONS, ids=lambda b: b["action"])
def test_schemathesis_reads_every_operator_action_as_valid(body: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(create_app().openapi())
    operation = schema["/coordination/operate"]["POST"]
    alternative = operation.get_body_for_media_type("application/json")
    assert alternative is not None
    validator_cls = operation.schema.adapter.jsonschema_validator_cls
    validator = make_validator(alternative.optimized_schema, validator_cls)
    assert validator.is_valid(body), list(validator.iter_errors(body))
