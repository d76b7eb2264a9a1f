"""Turning batches into figures: a table for the terminal, JSON files for history."""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.coordination_lag import LagSamples
from bench.load import Batch


def percentile_ms(latencies_s: list[float], pct: int) -> float | None:
    if not latencies_s:
        return None
    if len(latencies_s) == 1:
        return latencies_s[0] * 1000
    # "inclusive" keeps the estimate inside the observed range on small samples.
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return cuts[pct - 1] * 1000


def summarise(batch: Batch) -> dict[str, Any]:
    return {
        # Completed sagas only: a failed order is not throughput.
        "per_s": batch.completed / batch.wall_s if batch.wall_s else 0.0,
        "p50_ms": percentile_ms(batch.latencies_s, 50),
        "p99_ms": percentile_ms(batch.latencies_s, 99),
        "completed": batch.completed,
        "failed": batch.failed,
        "failure_classes": dict(batch.failures),
        "wall_s": batch.wall_s,
    }


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "load_avg_at_start": list(os.getloadavg()),
    }


# The targets for the coordination layer, at the default bench load.
LAG_P99_TARGET_MS = 2_000.0
ON_OFF_RATIO_TARGET = 0.95

# Table rows: result key, label.
KIND_LABELS = (
    ("orders", "orders, coordination on"),
    ("orders_uncoordinated", "orders, coordination off"),
    ("baseline", "baseline"),
)


def build_result(
    *,
    params: dict[str, Any],
    machine_info: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    run_order: list[str],
    rounds: list[dict[str, Any]],
    orders: Batch,
    orders_uncoordinated: Batch,
    baseline: Batch,
    lag: LagSamples,
) -> dict[str, Any]:
    o, u, b = summarise(orders), summarise(orders_uncoordinated), summarise(baseline)
    coordination = summarise_lag(lag)
    on_off = _ratio(o["per_s"], u["per_s"])
    return {
        "orders_per_s": o["per_s"],
        "p50_ms": o["p50_ms"],
        "p99_ms": o["p99_ms"],
        "baseline_per_s": b["per_s"],
        "baseline_p50_ms": b["p50_ms"],
        "baseline_p99_ms": b["p99_ms"],
        "ratio": _ratio(o["per_s"], b["per_s"]),
        "coordination_lag_p50_ms": coordination["lag_p50_ms"],
        "coordination_lag_p99_ms": coordination["lag_p99_ms"],
        "ratio_coordination_on_off": on_off,
        "orders_uncoordinated_per_s": u["per_s"],
        "orders_uncoordinated_p50_ms": u["p50_ms"],
        "orders_uncoordinated_p99_ms": u["p99_ms"],
        "targets": targets(coordination["lag_p99_ms"], on_off),
        "coordination": coordination,
        "failures": {
            "orders": orders.failed,
            "orders_uncoordinated": orders_uncoordinated.failed,
            "baseline": baseline.failed,
        },
        "params": params,
        "machine": {**machine_info, "load_avg_at_end": list(os.getloadavg())},
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_s": (finished_at - started_at).total_seconds(),
        "run_order": run_order,
        "rounds": rounds,
        "detail": {"orders": o, "orders_uncoordinated": u, "baseline": b},
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def summarise_lag(lag: LagSamples) -> dict[str, Any]:
    return {
        "lag_p50_ms": percentile_ms(lag.lags_s, 50),
        "lag_p99_ms": percentile_ms(lag.lags_s, 99),
        "lag_max_ms": max(lag.lags_s) * 1000 if lag.lags_s else None,
        "lag_samples": len(lag.lags_s),
        "orders_placed": lag.placed,
        # Measured orders the polls never found ended in the coordinator's state: either a
        # report was lost or the ring turned over between two polls.
        "orders_without_lag_sample": lag.missing,
        "polls": lag.polls,
        "query_errors": lag.query_errors,
        "ring_gaps": lag.ring_gaps,
        "cross_check": {
            # How late the bench's client learnt each order had ended, by the host clock.
            "client_saw_end_p50_ms": percentile_ms(lag.client_end_s, 50),
            # The lag as the bench's polls saw it: at least the server's, by at most a poll.
            "poll_view_p50_ms": percentile_ms(lag.poll_view_s, 50),
            "poll_view_p99_ms": percentile_ms(lag.poll_view_s, 99),
            "poll_slack_p50_ms": percentile_ms(lag.poll_slack_s, 50),
            "poll_slack_max_ms": max(lag.poll_slack_s) * 1000 if lag.poll_slack_s else None,
            "order_violations": lag.order_violations,
        },
    }


def targets(lag_p99_ms: float | None, on_off: float | None) -> dict[str, Any]:
    return {
        "coordination_lag_p99_ms_max": LAG_P99_TARGET_MS,
        "ratio_coordination_on_off_min": ON_OFF_RATIO_TARGET,
        "lag_met": lag_p99_ms is not None and lag_p99_ms <= LAG_P99_TARGET_MS,
        "ratio_met": on_off is not None and on_off >= ON_OFF_RATIO_TARGET,
    }


def render_table(result: dict[str, Any]) -> str:
    lines = _kind_rows(result["detail"])
    lines.append(f"ratio orders/s ÷ baseline/s: {_fmt_ratio(result['ratio'])}")
    lines.extend(_coordination_lines(result))
    params, load = result["params"], result["machine"]["load_avg_at_start"]
    lines.append(
        f"{params['orders']} orders of each kind, concurrency {params['concurrency']}, "
        f"{result['machine']['cpu_count']} CPUs, load at start {load[0]:.2f}, "
        f"run took {result['duration_s']:.0f}s"
    )
    for kind, _ in KIND_LABELS:
        for failure, count in result["detail"][kind]["failure_classes"].items():
            lines.append(f"FAILED {kind}: {count} × {failure}")
    return "\n".join(lines)


def _kind_rows(detail: dict[str, Any]) -> list[str]:
    rows = [
        ("", "per second", "p50 ms", "p99 ms", "completed", "failed"),
        *(
            (
                label,
                f"{detail[kind]['per_s']:.1f}",
                _ms(detail[kind]["p50_ms"]),
                _ms(detail[kind]["p99_ms"]),
                str(detail[kind]["completed"]),
                str(detail[kind]["failed"]),
            )
            for kind, label in KIND_LABELS
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    # The label column left-aligned, the figures right-aligned.
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def _coordination_lines(result: dict[str, Any]) -> list[str]:
    c, met = result["coordination"], result["targets"]
    check = c["cross_check"]
    ratio = _fmt_ratio(result["ratio_coordination_on_off"])
    lag = f"p50 {_ms(c['lag_p50_ms'])} ms, p99 {_ms(c['lag_p99_ms'])} ms"
    coverage = (
        f"{c['lag_samples']} samples, {c['orders_without_lag_sample']} of "
        f"{c['orders_placed']} orders without one, {c['polls']} polls, "
        f"{sum(c['query_errors'].values())} failed, {c['ring_gaps']} ring gaps"
    )
    client = _ms(check["client_saw_end_p50_ms"])
    polled = _ms(check["poll_view_p50_ms"])
    slack = f"p50 {_ms(check['poll_slack_p50_ms'])}, max {_ms(check['poll_slack_max_ms'])}"
    return [
        f"ratio coordination on ÷ off: {ratio} "
        f"(target ≥ {ON_OFF_RATIO_TARGET}: {_verdict(met['ratio_met'])})",
        f"coordination lag {lag}, max {_ms(c['lag_max_ms'])} ms "
        f"(target p99 ≤ {LAG_P99_TARGET_MS:,.0f} ms: {_verdict(met['lag_met'])})",
        f"  {coverage}",
        f"  cross-check by host clock, after the saga ended: client saw it end p50 {client} ms; "
        f"a poll saw it in the state p50 {polled} ms (over the lag: {slack} ms); "
        f"{check['order_violations']} out of order",
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def write_results(result: dict[str, Any], output_dir: Path, started_at: datetime) -> list[Path]:
    """latest.json for tools, and a timestamped copy so older runs stay beside it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    paths = [output_dir / "latest.json", output_dir / f"run-{stamp}.json"]
    for path in paths:
        path.write_text(text)
    return paths
