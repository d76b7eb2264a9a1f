"""The contract test's machinery: the schemathesis CLI against a real stack, and its hooks.

The CLI runs as a child process (`python -m schemathesis.cli run`), so the run is exactly
what `st run --checks all` does from a shell: every phase (examples, coverage, fuzzing,
stateful through the OpenAPI links) and every check.

Some rules of this API are real but no OpenAPI document can state them, so a schema-valid
request would be refused for a reason that is not the schema's. For *positive* cases only
(the ones schemathesis promises are valid), the hooks below keep those promises, and
nothing else; negative cases are left exactly as generated:

- `page_token` (orders and returns) is opaque: only a token this API issued is one (any
  other is a 422), so a positive case carries none rather than a made-up one.
- An `Idempotency-Key` names one request body: the same key with another body is a 422
  (draft-ietf-httpapi-idempotency-key-header). A positive case's key is bound to its body.
- An operator placing an order must name its customer (a customer's key names its own):
  the schema is one for both roles, so a positive operator case names one.
- The codec serves the deployment's own Temporal namespace only (a setting).

One 5xx is the contract itself: while intake is paused (and the operator's run pauses it
at random), POST /orders sheds load with 503 and Retry-After (ARCHITECTURE.md,
Coordination State Layer and HTTP contract). Only that answer is dropped from
`not_a_server_error`; each drop is counted (the test prints how many), and every other
check still runs on it. Any other 5xx, a 503 from Temporal
included, fails the run.

These hooks load only in the CLI process, through `SCHEMATHESIS_HOOKS` naming this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES

REPO_ROOT = Path(__file__).resolve().parents[2]

SEED_ENV = "SAGAWORKS_CONTRACT_SEED"
MAX_EXAMPLES_ENV = "SAGAWORKS_CONTRACT_MAX_EXAMPLES"
# Read by the hooks inside the CLI process.
ROLE_ENV = "SAGAWORKS_CONTRACT_ROLE"
SHED_LOG_ENV = "SAGAWORKS_CONTRACT_SHED_LOG"
OPERATOR_CUSTOMER = "c-contract-operator"

DEFAULT_MAX_EXAMPLES = 30
# Per request: above the gateway's own Temporal bound (the test stack's is 10 s), so a
# slow Temporal shows as the gateway's 503, not as a client timeout.
REQUEST_TIMEOUT_S = 30
# The whole CLI run (about two minutes); far above that, so only a hang reaches it.
RUN_TIMEOUT_S = 600


def contract_seed() -> int:
    """The seed from SAGAWORKS_CONTRACT_SEED (to replay a failure), else a fresh one."""
    chosen = os.environ.get(SEED_ENV)
    return int(chosen) if chosen else secrets.randbelow(2**31)


def max_examples() -> int:
    return int(os.environ.get(MAX_EXAMPLES_ENV) or DEFAULT_MAX_EXAMPLES)


@dataclass(frozen=True)
class Identity:
    """A principal schemathesis sends requests as: a name and its bearer token."""

    name: str
    token: str


@dataclass(frozen=True)
class ContractRun:
    role: str
    seed: int
    returncode: int
    output: str
    report_dir: Path
    # POST /orders answered 503 because the fuzzing had paused intake (see the docstring).
    shed_answers: int

    def failure_message(self) -> str:
        return (
            f"schemathesis found contract failures as {self.role} (seed {self.seed}); replay "
            f"with {SEED_ENV}={self.seed} .venv/bin/pytest -q tests/api/test_contract.py\n"
            f"reports in {self.report_dir}\n\n{self.output[-30_000:]}"
        )


def write_config(report_dir: Path, identities: list[Identity]) -> Path:
    """A schemathesis config: who the requests are sent as, and what counts as a refusal.

    Who: a WFC auth document. The first identity sends every request. With several, they
    are peers: schemathesis's object_level_authorization check replays each read of an
    object the first one owns as every other one, and fails when another gets it (OWASP
    API1). Peers must be of one role (customers): an operator rightly reads everyone's
    orders.

    Refusals: schemathesis's own list for negative data, plus 413. The gateway refuses a
    body over its limit (SAGAWORKS_MAX_BODY_BYTES) with 413 before reading it, so a fuzzed
    body that breaks a `maxItems` by being megabytes long is refused as too large rather
    than as invalid. That is a refusal (RFC 9110 §15.5.14); without 413 on the list,
    schemathesis reported it as "schema-violating request accepted".
    """
    document = {
        "schemaVersion": "0.2.0",
        "auth": [
            {
                "name": i.name,
                "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {i.token}"}],
            }
            for i in identities
        ],
    }
    auth_file = report_dir / "auth.json"
    auth_file.write_text(json.dumps(document))
    config = report_dir / "schemathesis.toml"
    lines = ["[auth.wfc]", f"path = {json.dumps(str(auth_file))}"]
    lines.append(f"user = {json.dumps(identities[0].name)}")
    if len(identities) > 1:
        lines.append(f"peers = {json.dumps([i.name for i in identities])}")
    refusals = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
    lines += ["[checks.negative_data_rejection]", f"expected-statuses = {json.dumps(refusals)}"]
    config.write_text("\n".join(lines) + "\n")
    return config


def run_schemathesis(
    api_url: str,
    openapi: str,
    identities: list[Identity],
    *,
    role: str,
    seed: int,
    examples: int,
    report_dir: Path,
    stack_env: Mapping[str, str],
) -> ContractRun:
    """`st run --checks all` against the live API, as `identities` (of one `role`)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    # The document as the API serves it (to a principal only, so fetched by the caller).
    schema = report_dir / "openapi.json"
    schema.write_text(openapi)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(write_config(report_dir, identities)),
        "run",
        str(schema),
        "--url",
        api_url,
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--max-examples",
        str(examples),
        "--workers",
        "1",  # one at a time: the seed then replays the same sequence
        "--request-timeout",
        str(REQUEST_TIMEOUT_S),
        "--generation-database",
        "none",  # nothing carried between runs: the seed alone decides
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    shed_log = report_dir / "shed.txt"
    env = {
        **stack_env,  # what the API sees (its namespace, for the hooks)
        "PYTHONPATH": str(REPO_ROOT),
        "SCHEMATHESIS_HOOKS": __name__,
        ROLE_ENV: role,
        SHED_LOG_ENV: str(shed_log),
    }
    log = report_dir / "schemathesis.txt"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=report_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = -1
        finally:
            if process.poll() is None:  # timed out, or this test was interrupted
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = log.read_text(errors="replace")
    if returncode == -1:
        output += f"\n\nschemathesis did not finish within {RUN_TIMEOUT_S}s; stopped"
    shed = len(shed_log.read_text().splitlines()) if shed_log.exists() else 0
    return ContractRun(role, seed, returncode, output, report_dir, shed)


# --- hooks (inside the schemathesis process only) ------------------------------------------


def bound_idempotency_key(key: str, body: Any) -> str:
    """The same key and body give the same key; the same key with another body, another."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f"{key[:183]}.{digest[:16]}"  # at most 200 printable ASCII characters


def keep_promises(case: Any, role: str, namespace: str) -> Any:
    """A positive case adjusted for the rules the schema cannot state (see the docstring)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    label = f"{case.method.upper()} {case.path}"
    if label in ("GET /orders", "GET /returns") and case.query:
        case.query.pop("page_token", None)
    if label == "POST /orders/{order_id}/returns" and isinstance(case.body, dict):
        key = case.headers.get("Idempotency-Key") if case.headers else None
        if isinstance(key, str):
            case.headers["Idempotency-Key"] = bound_idempotency_key(key, case.body)
    if label == "POST /orders" and isinstance(case.body, dict):
        if role == "operator" and case.body.get("customer_id") is None:
            case.body["customer_id"] = OPERATOR_CUSTOMER
        key = case.headers.get("Idempotency-Key") if case.headers else None
        if isinstance(key, str):
            case.headers["Idempotency-Key"] = bound_idempotency_key(key, case.body)
    if label.startswith("POST /codec/") and case.headers and "X-Namespace" in case.headers:
        case.headers["X-Namespace"] = namespace
    return case


# api/coordination.py's words for a paused intake.
SHEDDING_DETAIL = "intake is paused"


def is_load_shedding(case: Any, response: Any) -> bool:
    """POST /orders answered 503 + Retry-After because intake is paused: the contract."""
    if f"{case.method.upper()} {case.path}" != "POST /orders" or response.status_code != 503:
        return False
    if not response.headers.get("retry-after"):
        return False
    try:
        detail = json.loads(response.content).get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(detail, str) and detail.startswith(SHEDDING_DETAIL)


def _register_hooks() -> None:
    import schemathesis
    from schemathesis.core.failures import Failure, ServerError

    from common.settings import Settings

    role = os.environ[ROLE_ENV]
    namespace = Settings().temporal_namespace

    @schemathesis.hook
    def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> Any:
        return keep_promises(case, role, namespace)

    @schemathesis.hook
    def filter_failure(
        context: schemathesis.HookContext,
        failure: Failure,
        case: schemathesis.Case,
        response: schemathesis.Response,
    ) -> bool:
        # False drops the failure: only the 5xx of shedding load while intake is paused.
        if isinstance(failure, ServerError) and is_load_shedding(case, response):
            with open(os.environ[SHED_LOG_ENV], "a") as log:
                log.write(f"{case.id}\n")
            return False
        return True


if os.environ.get("SCHEMATHESIS_HOOKS") == __name__:
    _register_hooks()
