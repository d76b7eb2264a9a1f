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


def build_result(
    *,
    params: dict[str, Any],
    machine_info: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    run_order: list[str],
    orders: Batch,
    baseline: Batch,
) -> dict[str, Any]:
    o, b = summarise(orders), summarise(baseline)
    return {
        "orders_per_s": o["per_s"],
        "p50_ms": o["p50_ms"],
        "p99_ms": o["p99_ms"],
        "baseline_per_s": b["per_s"],
        "baseline_p50_ms": b["p50_ms"],
        "baseline_p99_ms": b["p99_ms"],
        "ratio": o["per_s"] / b["per_s"] if b["per_s"] else None,
        "failures": {"orders": orders.failed, "baseline": baseline.failed},
        "params": params,
        "machine": {**machine_info, "load_avg_at_end": list(os.getloadavg())},
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_s": (finished_at - started_at).total_seconds(),
        "run_order": run_order,
        "detail": {"orders": o, "baseline": b},
    }


def render_table(result: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    detail = result["detail"]
    rows = [
        ("", "per second", "p50 ms", "p99 ms", "completed", "failed"),
        *(
            (
                name,
                f"{d['per_s']:.1f}",
                ms(d["p50_ms"]),
                ms(d["p99_ms"]),
                str(d["completed"]),
                str(d["failed"]),
            )
            for name, d in (("orders", detail["orders"]), ("baseline", detail["baseline"]))
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    ratio = result["ratio"]
    lines.append(f"ratio orders/s ÷ baseline/s: {'-' if ratio is None else f'{ratio:.3f}'}")
    params, load = result["params"], result["machine"]["load_avg_at_start"]
    lines.append(
        f"{params['orders']} orders, concurrency {params['concurrency']}, "
        f"{result['machine']['cpu_count']} CPUs, load at start {load[0]:.2f}, "
        f"run took {result['duration_s']:.0f}s"
    )
    for kind in ("orders", "baseline"):
        for failure, count in detail[kind]["failure_classes"].items():
            lines.append(f"FAILED {kind}: {count} × {failure}")
    return "\n".join(lines)


def write_results(result: dict[str, Any], output_dir: Path, started_at: datetime) -> list[Path]:
    """latest.json for tools, and a timestamped copy so older runs stay beside it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    paths = [output_dir / "latest.json", output_dir / f"run-{stamp}.json"]
    for path in paths:
        path.write_text(text)
    return paths
