"""The benchmark's repeats: one entry of medians, with every repeat kept so the median can be checked."""
from __future__ import annotations

from typing import Any

from bench import report


def _row(tps: float, p99: float, cpu: float, complete: bool = True, duplicates: int = 0) -> dict[str, Any]:
    return {"line": "triage", "latency": "0ms", "tickets": 1000, "tickets_per_s": tps, "p50_ms": p99 / 2,
            "p95_ms": p99 * 0.9, "p99_ms": p99, "cpu_s_per_ticket": cpu, "peak_rss_mb": 900.0, "elapsed_s": 1000 / tps,
            "model_calls_per_ticket": 6.24, "cpu_s": {"workers": cpu * 700, "broker": cpu * 300},
            "complete": complete, "outcomes": {"responses": 1000}, "duplicates": duplicates, "marker": tps}


def test_each_figure_is_its_own_median_and_every_repeat_is_kept() -> None:
    rows = [_row(150.0, 6000.0, 0.012), _row(220.0, 4400.0, 0.0083), _row(170.0, 6100.0, 0.0108)]
    m = report.median_of(rows)
    assert (m["tickets_per_s"], m["p99_ms"], m["cpu_s_per_ticket"]) == (170.0, 6000.0, 0.0108)
    assert m["cpu_s"] == {"workers": 7.56, "broker": 3.24}
    assert m["marker"] == 170.0, "other fields come from the repeat with the median throughput"
    assert [r["tickets_per_s"] for r in m["repeats"]] == [150.0, 220.0, 170.0]
    assert m["complete"]


def test_one_incomplete_repeat_marks_the_entry_incomplete() -> None:
    m = report.median_of([_row(150.0, 1.0, 0.01), _row(151.0, 1.0, 0.01, complete=False), _row(152.0, 1.0, 0.01)])
    assert not m["complete"]


def test_a_single_run_is_reported_as_it_is() -> None:
    row = _row(150.0, 1.0, 0.01)
    assert report.median_of([row]) is row


def test_a_duplicate_in_any_repeat_shows_in_the_entry() -> None:
    m = report.median_of([_row(150.0, 1.0, 0.01, duplicates=3), _row(170.0, 1.0, 0.01), _row(220.0, 1.0, 0.01,
                                                                                            duplicates=2)])
    assert m["duplicates"] == 5
    assert [r["duplicates"] for r in m["repeats"]] == [3, 0, 2]


def test_a_failed_repeat_is_kept_and_the_others_still_count() -> None:
    failed = {"tickets": 0, "complete": False, "error": "RuntimeError: broker gone"}
    m = report.median_of([_row(150.0, 5.0, 0.02), failed, _row(170.0, 4.0, 0.01)])
    # Two usable repeats: the low median is a figure one of them had, and its other fields come with it.
    assert (m["tickets_per_s"], m["p99_ms"], m["cpu_s_per_ticket"], m["marker"]) == (150.0, 4.0, 0.01, 150.0)
    assert not m["complete"]
    assert m["repeats"][1] == failed


def test_the_model_call_floor_caps_throughput_at_the_cores_over_its_cpu_per_ticket(monkeypatch: Any) -> None:
    monkeypatch.setattr(report.os, "cpu_count", lambda: 2)
    floor = report.model_call_floor(4000, client_cpu_s=1.6, server_cpu_s=0.8, elapsed_s=3.0)
    assert (floor["client_cpu_ms_per_call"], floor["server_cpu_ms_per_call"]) == (0.4, 0.2)
    runs = [_row(180.0, 5000.0, 0.01), {**_row(20.0, 9000.0, 0.04), "line": "naive", "latency": "200ms"},
            {**_row(150.0, 6000.0, 0.011), "latency": "200ms"},
            {**_row(400.0, 2000.0, 0.002), "line": "limit"},
            {**_row(100.0, 3000.0, 0.009), "line": "sequential"}]
    full = report.with_tickets(floor, runs)
    # 6.24 calls x 0.6 ms = 3.744 ms a ticket; 2 cores / 3.744 ms = 534.2 tickets/s.
    assert (full["calls_per_ticket"], full["cpu_ms_per_ticket"], full["ceiling_tickets_per_s"]) == (6.24, 3.744, 534.2)
    t = report.targets(runs, None, full)
    assert t["triage_50x_naive_at_200ms"]["needed_tickets_per_s"] == 1000.0
    assert t["triage_50x_naive_at_200ms"]["model_call_ceiling_tickets_per_s"] == 534.2
    cpu = t["triage_cpu_le_3x_limit_at_0ms"]
    assert (cpu["ratio"], cpu["sequential_ratio"], cpu["model_calls_cpu_s_per_ticket"]) == (5.0, 4.5, 0.00374)
    assert cpu["lowest_possible_ratio"] == 2.87  # (2 + 3.744 ms) / 2 ms


def test_a_failed_floor_is_reported_and_leaves_the_targets_alone() -> None:
    failed = {"error": "CalledProcessError: exit 1"}
    runs = [_row(180.0, 5000.0, 0.01), {**_row(400.0, 2000.0, 0.002), "line": "limit"}]
    assert report.with_tickets(failed, runs) is failed
    assert "model_calls_cpu_s_per_ticket" not in report.targets(runs, None, failed)["triage_cpu_le_3x_limit_at_0ms"]
