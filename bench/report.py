"""Turning phases into figures: a table for the terminal, JSON files for history."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.coordination_lag import LagSamples
from bench.load import Batch

if TYPE_CHECKING:
    from bench.run import Phase

# The targets (issue 11), all read from one run.
TARGETS = {
    "ratio": (">=", 0.9),
    "latency_vs_stock": ("<=", 0.25),
    "cpu_per_order_ratio": ("<=", 1.3),
    "coordination_lag_p99_ms": ("<=", 1_000.0),
    "ratio_coordination_on_off": (">=", 0.97),
    # Issue 10: tracing, JSON logs and metrics on, against the same coordinated stack off.
    "ratio_observability_on_off": (">=", 0.95),
}

KIND_LABELS = (
    ("orders", "orders, coordination on"),
    ("orders_uncoordinated", "orders, coordination off"),
    ("orders_observed", "orders, observability on"),
    ("baseline", "baseline, tuned server"),
    ("stock_baseline", "baseline, stock server"),
)


def percentile_ms(latencies_s: list[float], pct: int) -> float | None:
    if not latencies_s:
        return None
    if len(latencies_s) == 1:
        return latencies_s[0] * 1000
    # "inclusive" keeps the estimate inside the observed range on small samples.
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return cuts[pct - 1] * 1000


def summarise(batch: Batch, cpu_s: dict[str, float], driver_cpu_s: float) -> dict[str, Any]:
    done = batch.completed
    return {
        # Completed sagas only: a failed order is not throughput.
        "per_s": done / batch.wall_s if batch.wall_s else 0.0,
        "p50_ms": percentile_ms(batch.latencies_s, 50),
        "p99_ms": percentile_ms(batch.latencies_s, 99),
        "completed": done,
        "failed": batch.failed,
        "failure_classes": dict(batch.failures),
        "wall_s": batch.wall_s,
        # Every process serving this kind, its server included; the driver (this process) apart.
        "cpu_ms_per_saga": 1000 * sum(cpu_s.values()) / done if done else None,
        "cpu_ms_per_saga_by_process": {p: 1000 * s / done for p, s in cpu_s.items()}
        if done
        else {},
        "driver_cpu_ms_per_saga": 1000 * driver_cpu_s / done if done else None,
    }


def summarise_phase(phase: Phase) -> dict[str, dict[str, Any]]:
    return {
        kind: summarise(batch, phase.cpu_s.get(kind, {}), phase.driver_cpu_s.get(kind, 0.0))
        for kind, batch in phase.batches.items()
    }


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": _temporal_version(),
        "load_avg_at_start": list(os.getloadavg()),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0]  # MemTotal: N kB
        return round(int(first.split()[1]) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        return None


def _temporal_version() -> str | None:
    import subprocess

    from common.binaries import find_binary

    try:
        answer = subprocess.run(
            [find_binary("temporal"), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip() or None


def _get(detail: dict[str, Any], kind: str, key: str) -> Any:
    return detail.get(kind, {}).get(key)


def build_result(
    *,
    params: dict[str, Any],
    machine_info: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    run_order: list[str],
    phases: dict[str, Phase],
    steps: tuple[str, ...],
    rss_mb: dict[str, float | None],
    lag: LagSamples,
    observability: dict[str, Any],
) -> dict[str, Any]:
    load, seq = summarise_phase(phases["load"]), summarise_phase(phases["seq"])
    coordination = summarise_lag(lag)
    o, u, b = load["orders"], load["orders_uncoordinated"], load["baseline"]
    seq_p50 = _get(seq, "orders", "p50_ms")
    stock_seq_p50 = _get(seq, "stock_baseline", "p50_ms")
    figures = {
        "orders_per_s": o["per_s"],
        "p50_ms": o["p50_ms"],
        "p99_ms": o["p99_ms"],
        "baseline_per_s": b["per_s"],
        "baseline_p50_ms": b["p50_ms"],
        "baseline_p99_ms": b["p99_ms"],
        "ratio": _ratio(o["per_s"], b["per_s"]),
        "seq_p50_ms": seq_p50,
        "baseline_seq_p50_ms": _get(seq, "baseline", "p50_ms"),
        "stock_baseline_seq_p50_ms": stock_seq_p50,
        "latency_vs_stock": _ratio(seq_p50, stock_seq_p50),
        "stock_baseline_per_s": _get(load, "stock_baseline", "per_s"),
        "cpu_ms_per_order": o["cpu_ms_per_saga"],
        "cpu_ms_per_baseline": b["cpu_ms_per_saga"],
        "cpu_per_order_ratio": _ratio(o["cpu_ms_per_saga"], b["cpu_ms_per_saga"]),
        "seq_cpu_per_order_ratio": _ratio(
            _get(seq, "orders", "cpu_ms_per_saga"), _get(seq, "baseline", "cpu_ms_per_saga")
        ),
        "activities_per_saga": len(steps),
        "coordination_lag_p50_ms": coordination["lag_p50_ms"],
        "coordination_lag_p99_ms": coordination["lag_p99_ms"],
        "ratio_coordination_on_off": _ratio(o["per_s"], u["per_s"]),
        "orders_uncoordinated_per_s": u["per_s"],
        "orders_uncoordinated_p50_ms": u["p50_ms"],
        "orders_uncoordinated_p99_ms": u["p99_ms"],
        "ratio_observability_on_off": _ratio(_get(load, "orders_observed", "per_s"), o["per_s"]),
        "orders_observed_per_s": _get(load, "orders_observed", "per_s"),
        "orders_observed_p50_ms": _get(load, "orders_observed", "p50_ms"),
        "orders_observed_p99_ms": _get(load, "orders_observed", "p99_ms"),
        "observed_seq_p50_ms": _get(seq, "orders_observed", "p50_ms"),
        "cpu_ms_per_order_observed": _get(load, "orders_observed", "cpu_ms_per_saga"),
        # Sanity: the on arm really exported (0 would mean the ratio compared off with off).
        "observability_spans_received": observability.get("spans"),
    }
    return {
        **figures,
        "rss_mb": rss_mb,
        "targets": targets(figures),
        "coordination": coordination,
        "observability": observability,
        "failures": {
            f"{name}.{kind}": d["failed"]
            for name, detail in (("seq", seq), ("load", load))
            for kind, d in detail.items()
        },
        "steps": list(steps),
        "params": params,
        "machine": {**machine_info, "load_avg_at_end": list(os.getloadavg())},
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_s": (finished_at - started_at).total_seconds(),
        "run_order": run_order,
        "rounds": [r for phase in phases.values() for r in phase.rounds],
        "detail": {"seq": seq, "load": load},
    }


def build_curve(
    *,
    params: dict[str, Any],
    machine_info: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    run_order: list[str],
    phases: dict[str, Phase],
    steps: tuple[str, ...],
    rss_mb: dict[str, float | None],
) -> dict[str, Any]:
    points = []
    for phase in phases.values():
        detail = summarise_phase(phase)
        o, b = detail["orders"], detail["baseline"]
        points.append(
            {
                "concurrency": phase.concurrency,
                "orders_per_s": o["per_s"],
                "orders_p50_ms": o["p50_ms"],
                "orders_p99_ms": o["p99_ms"],
                "baseline_per_s": b["per_s"],
                "baseline_p99_ms": b["p99_ms"],
                "ratio": _ratio(o["per_s"], b["per_s"]),
                "cpu_per_order_ratio": _ratio(o["cpu_ms_per_saga"], b["cpu_ms_per_saga"]),
                "failed": o["failed"] + b["failed"],
            }
        )
    return {
        "curve": points,
        "activities_per_saga": len(steps),
        "rss_mb": rss_mb,
        "params": params,
        "machine": {**machine_info, "load_avg_at_end": list(os.getloadavg())},
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_s": (finished_at - started_at).total_seconds(),
        "run_order": run_order,
        "rounds": [r for phase in phases.values() for r in phase.rounds],
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


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


def targets(figures: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (op, bound) in TARGETS.items():
        value = figures.get(key)
        met = value is not None and (value >= bound if op == ">=" else value <= bound)
        out[key] = {"target": f"{op} {bound:g}", "value": value, "met": met}
    return out


def render_table(result: dict[str, Any]) -> str:
    if "curve" in result:
        return _curve_table(result)
    detail = result["detail"]
    lines = _kind_rows(detail["seq"], detail["load"])
    lines.append(f"activities per saga: {result['activities_per_saga']}")
    for key, met in result["targets"].items():
        value = met["value"]
        shown = "-" if value is None else f"{value:,.3f}" if value < 10 else f"{value:,.0f}"
        lines.append(f"{key}: {shown} (target {met['target']}: {_verdict(met['met'])})")
    c = result["coordination"]
    lines.append(
        f"  coordination lag: {c['lag_samples']} samples, {c['orders_without_lag_sample']} of "
        f"{c['orders_placed']} orders without one, {c['polls']} polls, "
        f"{sum(c['query_errors'].values())} failed, {c['ring_gaps']} ring gaps"
    )
    ob = result.get("observability") or {}
    if ob:
        services = ", ".join(f"{k} {v}" for k, v in sorted(ob["by_service"].items()))
        lines.append(
            f"  observability on: {ob['spans']} spans received in {ob['requests']} exports "
            f"({services or 'none'}), {ob['metrics_endpoints_up']} of "
            f"{ob['metrics_endpoints']} worker metrics endpoints up"
        )
    rss = ", ".join(f"{k} {v:.0f}" for k, v in result["rss_mb"].items() if v is not None)
    lines.append(f"peak RSS MiB: {rss}")
    params, m = result["params"], result["machine"]
    lines.append(
        f"{params['seq_orders']} sequential and {params['orders']} concurrent sagas of each "
        f"kind, concurrency {params['concurrency']}, {m['cpu_count']} CPUs, load at start "
        f"{m['load_avg_at_start'][0]:.2f}, at end {m['load_avg_at_end'][0]:.2f}, "
        f"run took {result['duration_s']:.0f}s"
    )
    for phase, kinds in detail.items():
        for kind, d in kinds.items():
            for failure, count in d["failure_classes"].items():
                lines.append(f"FAILED {phase} {kind}: {count} × {failure}")
    return "\n".join(lines)


def _kind_rows(seq: dict[str, Any], load: dict[str, Any]) -> list[str]:
    head = ("", "seq p50", "load /s", "p50 ms", "p99 ms", "CPU ms/saga", "failed")
    rows = [head]
    for kind, label in KIND_LABELS:
        if kind not in load:
            continue
        d = load[kind]
        rows.append(
            (
                label,
                _ms(_get(seq, kind, "p50_ms")),
                f"{d['per_s']:.1f}",
                _ms(d["p50_ms"]),
                _ms(d["p99_ms"]),
                _ms(d["cpu_ms_per_saga"]),
                str(d["failed"] + (_get(seq, kind, "failed") or 0)),
            )
        )
    return _align(rows)


def _curve_table(result: dict[str, Any]) -> str:
    rows = [("concurrency", "orders/s", "p99 ms", "baseline/s", "p99 ms", "ratio", "CPU ratio")]
    for p in result["curve"]:
        rows.append(
            (
                str(p["concurrency"]),
                f"{p['orders_per_s']:.1f}",
                _ms(p["orders_p99_ms"]),
                f"{p['baseline_per_s']:.1f}",
                _ms(p["baseline_p99_ms"]),
                _fmt_ratio(p["ratio"]),
                _fmt_ratio(p["cpu_per_order_ratio"]),
            )
        )
    return "\n".join(_align(rows))


def _align(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    # The label column left-aligned, the figures right-aligned.
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def write_results(
    result: dict[str, Any], output_dir: Path, started_at: datetime, names: tuple[str, str]
) -> list[Path]:
    """The latest file for tools, and a timestamped copy so older runs stay beside it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    paths = [output_dir / name.format(stamp=stamp) for name in names]
    for path in paths:
        path.write_text(text)
    return paths
