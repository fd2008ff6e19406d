"""The benchmark's measuring parts work, and what they count (not time) holds."""

from __future__ import annotations

import pytest

from bench import overhead, store_cost
from bench.__main__ import targets


@pytest.mark.cosmos
@pytest.mark.postgres
async def test_a_turn_costs_exactly_two_cosmos_requests_and_the_peer_costs_more(cosmos, postgres):
    # neither measured turn archives
    results = await store_cost.run(cosmos["endpoint"], [6, 30], repetitions=3, postgres=postgres.create_database)
    for length in (6, 30):
        assert results["postgres"][length]["requests_per_turn"] == 2.0  # one SELECT, one UPDATE
        ours, peer = results["ours"][length], results["peer"][length]
        assert ours["requests_per_turn"] == 2.0  # one point read, one conditional write
        assert results["ours_full"][length]["requests_per_turn"] == 2.0
        assert results["ours_warm"][length]["requests_per_turn"] == 2.0  # its rewinding turn is not counted
        assert results["raw"][length]["requests_per_turn"] == 2.0  # the floor: the same two requests, SDK alone
        assert peer["requests_per_turn"] == 3.0  # query to load, query to dedup, batch to save
        assert ours["bytes_sent_per_turn"] > 0
        assert ours["bytes_received_per_turn"] > 0
        assert 0 < ours["estimated_ru_per_turn"] < peer["estimated_ru_per_turn"]
    assert results["peer"][30]["bytes_received_per_turn"] > results["peer"][6]["bytes_received_per_turn"]
    archiving = results["archiving"]
    assert archiving["archiving_turns"] >= 1  # consecutive turns do archive now and then: counted, not hidden
    assert 2 < archiving["requests_per_turn"] < 3


def test_the_ru_estimate_follows_its_stated_model():
    from types import SimpleNamespace

    from bench.meter import estimate_ru

    def request(method: str, url: str, query: bool = False) -> SimpleNamespace:
        return SimpleNamespace(method=method, url=url, headers={"x-ms-documentdb-isquery": "True"} if query else {})

    document = "https://x/dbs/d/colls/c/docs"
    assert estimate_ru(request("GET", f"{document}/a"), 0, 1024) == 1  # Microsoft's published point reads:
    assert estimate_ru(request("GET", f"{document}/a"), 0, 100 * 1024) == 10  # 1 KB: 1 RU, 100 KB: 10 RU
    assert estimate_ru(request("GET", f"{document}/a"), 0, 200) == 1  # less than 1 KB costs as 1 KB
    assert estimate_ru(request("PUT", f"{document}/a"), 1024, 0) == 5  # a write: five reads of its size
    assert estimate_ru(request("POST", document), 100 * 1024, 0) == 50
    assert estimate_ru(request("POST", document, query=True), 100, 1024) == 3.5  # 2.5 + the read it returns


async def test_overhead_reports_percentiles_for_each_length():
    results = await overhead.run([4, 8], repetitions=5)
    assert set(results) == {"4", "8", "with_default_compaction", "with_default_compaction_warm"}
    assert all(results[n]["p95_us"] >= results[n]["p50_us"] > 0 for n in ("4", "8"))


ROW = {"p50_ms": 1.0, "requests_per_turn": 2.0}
RESULTS = {
    "store_cost_keepalive": {
        "ours": {10: ROW, 100: ROW, 400: ROW},
        "ratios_ours_to_peer": {400: {"p50": 0.2, "p50_equal_window": 0.35}},
        "ratios_ours_to_raw": {100: 1.25},
        "ratios_ours_warm_to_raw": {100: 1.35},
        "ours_growth_p50": 1.0,
    },
    "overhead_us": {
        "with_default_compaction": {"100": {"p50_us": 1100}},
        "with_default_compaction_warm": {"100": {"p50_us": 900}},
    },
    "cold_start": {
        "ratio_first_turn_to_bare_imports": 1.1,
        "import_breakdown_function_app": [{"package": "stateful_agent", "ms": 9.5}],
    },
    "mcp_tools": {"mcp_requests_per_turn_without_call": 0.5, "store_requests_per_turn": 2.0},
}


def test_targets_are_judged_from_the_measured_figures():
    results = RESULTS
    verdicts = {row["name"]: row["met"] for row in targets(results)}
    assert verdicts == {
        "overhead_ms_at_100": False,
        "overhead_ms_at_100_warm": True,
        "ours_vs_raw_sdk_at_100": True,
        "ours_vs_raw_sdk_at_100_warm": False,
        "ours_vs_peer_at_400_equal_window": True,
        "ours_vs_peer_at_400_default_window": False,
        "first_turn_vs_bare_import": True,
        "requests_per_turn": True,
        "own_modules_import_ms": True,
        "ours_growth_400_vs_10": True,
        "mcp_requests_per_turn_without_call": False,
        "store_requests_per_turn_with_mcp": True,
    }
    assert all(set(row) == {"name", "value", "target", "met"} for row in targets(results))


def test_the_body_parsing_bench_times_each_hostile_body_at_both_sizes_and_judges_their_growth():
    from bench import hostile_bodies

    results = hostile_bodies.run(1)
    assert results["sizes"] == [hostile_bodies.SMALL, hostile_bodies.LARGE] == [16384, 262144]
    assert set(results["bodies"]) == {"ordinary", "escaped-quotes", "backslash-run", "open-arrays", "many-objects"}
    for size in results["sizes"]:
        assert {len(body) for body in hostile_bodies.bodies(size).values()} == {size}
    growth = {"worst_growth_16x_size": 40.0}
    (row,) = [r for r in targets({**RESULTS, "hostile_bodies": growth}) if r["name"].startswith("hostile")]
    assert (row["value"], row["met"]) == (40.0, False)


async def test_a_warm_turn_without_mcp_calls_sends_nothing_to_the_mcp_server():
    from bench import mcp_tools

    results = await mcp_tools.run(turns=4)
    assert results["first_turn_mcp_requests"] >= 2  # connecting and listing the tools
    assert results["mcp_requests_per_turn_without_call"] == 0
    assert results["mcp_requests_per_turn_with_one_call"] == 1
    assert results["store_requests_per_turn"] == 2
    assert results["store_requests_per_turn_with_one_call"] == 2
