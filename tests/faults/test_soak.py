"""The soak (`make soak`) in small, as CI runs it: every invariant holds through the faults.

Sixty orders of every fixture (and returns of some completed ones), one worker SIGKILLed
and restarted and one restart of the dev server on its database file, then the same checks
`make soak` runs on a thousand.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import SoakOptions, run_soak
from bench.soak_plan import FIXTURES

ORDERS = 60


async def test_small_soak_keeps_every_invariant_through_a_kill_errors_and_a_server_restart(
    tmp_path: Path,
) -> None:
    options = SoakOptions(
        orders=ORDERS,
        concurrency=10,
        kills=1,
        injections=1,
        seed=20261123,
        step_timeout_s=5,
        # A broken system fails the test in minutes, not after the soak's default 15.
        order_timeout_s=180,
        output_dir=tmp_path,
    )
    result = await run_soak(options)

    assert result["faults"]["by_kind"] == {
        "injected_errors": 1,
        "server_restart": 1,
        "worker_kill": 1,
    }
    assert result["faults"]["found_dead"] == []
    assert result["orders"]["total"] == ORDERS
    # The seed mixes every fixture in, so every path ran through the faults.
    assert set(result["orders"]["by_fixture"]) == {fixture.name for fixture in FIXTURES}
    # Returns of completed orders ran through them too: received, cancelled, expired.
    assert set(result["returns"]["by_status"]) == {"REFUNDED", "CANCELLED", "EXPIRED"}
    assert result["returns"]["over_claims_refused"] == result["returns"]["total"]
    failed = {name: c for name, c in result["invariants"].items() if c["violations"]}
    assert result["violations"] == 0, json.dumps(failed, indent=2)
    assert all(check["checked"] > 0 for check in result["invariants"].values())
    written = json.loads((tmp_path / "soak-latest.json").read_text())
    assert written["violations"] == 0 and written["orders"] == result["orders"]
