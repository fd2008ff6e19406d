"""The benchmark's measuring parts work, and what they count (not time) holds."""

from __future__ import annotations

import pytest

from bench import overhead, store_cost
from bench.__main__ import targets


@pytest.mark.cosmos
async def test_a_turn_costs_exactly_two_cosmos_requests_and_the_peer_costs_more(cosmos):
    results = await store_cost.run(cosmos["endpoint"], [6, 30], repetitions=3)  # neither turn archives
    for length in ("6", "30"):
        ours, peer = results["ours"][int(length)], results["peer"][int(length)]
        assert ours["requests_per_turn"] == 2.0  # one point read, one conditional write
        assert peer["requests_per_turn"] == 3.0  # query to load, query to dedup, batch to save
        assert ours["bytes_sent_per_turn"] > 0
        assert ours["bytes_received_per_turn"] > 0
    assert results["peer"][30]["bytes_received_per_turn"] > results["peer"][6]["bytes_received_per_turn"]


async def test_overhead_reports_percentiles_for_each_length():
    results = await overhead.run([4, 8], repetitions=5)
    assert set(results) == {"4", "8", "with_default_compaction"}
    assert all(results[n]["p95_us"] >= results[n]["p50_us"] > 0 for n in ("4", "8"))


def test_targets_are_judged_from_the_measured_figures():
    row = {"p50_ms": 1.0, "requests_per_turn": 2.0}
    results = {
        "store_cost": {"ours": {10: row, 400: row}, "ratios_ours_to_peer": {400: {"p50": 0.6}}, "ours_growth_p50": 1.0},
        "overhead_us": {"with_default_compaction": {"100": {"p50_us": 2500}}},
        "cold_start": {
            "import_function_app": {"import_ms": 150.0},
            "bare_import_of_functions_host_libraries": {"total_ms": 140.0},
            "ratio_first_turn_to_bare_imports": 1.2,
        },
    }
    verdicts = [met for _, _, met in targets(results)]
    assert verdicts == [True, False, True, False, True, True]
