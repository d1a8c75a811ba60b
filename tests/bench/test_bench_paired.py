"""Paired rounds (bench.paired.alternate): both sides measured in each round, the order
alternating, and the median of the rounds' figures (A / B, or A - B for an overhead)."""

from __future__ import annotations

from bench.paired import Pair, Side, alternate, measure


def _side(name: str, values: list[float], order: list[str]) -> Side:
    """A side whose measurements come from `values` in turn and note themselves in `order`."""
    it = iter(values)

    def measure() -> float:
        order.append(name)
        return next(it)

    return Side(name, measure)


def test_rounds_alternate_which_side_goes_first():
    order: list[str] = []
    a = _side("a", [100.0] * 4, order)
    b = _side("b", [100.0] * 4, order)
    out = alternate(Pair(a, b), 4, log=lambda _: None)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [r["first"] for r in out["rounds"]] == ["a", "b", "a", "b"]


def test_the_figure_is_the_median_round_and_the_range_is_kept():
    order: list[str] = []
    # Round 3's B ran while the host was slow: one outlier round moves the median little.
    a = _side("served", [90.0, 88.0, 91.0, 89.0, 90.0], order)
    b = _side("in-process", [100.0, 100.0, 50.0, 100.0, 100.0], order)
    out = alternate(Pair(a, b), 5, log=lambda _: None)
    assert [r["value"] for r in out["rounds"]] == [0.9, 0.88, 1.82, 0.89, 0.9]
    assert out["median"] == 0.9 and out["min"] == 0.88 and out["max"] == 1.82
    assert (out["a"], out["b"], out["how"]) == ("served", "in-process", "A / B")


def test_an_overhead_is_the_median_round_of_a_minus_b():
    order: list[str] = []
    # served p50 and the same work in process, ms: the host slowed round 2's served side
    a = _side("served c1 p50", [1.5, 3.0, 1.4, 1.6], order)
    b = _side("in-process", [0.5, 0.6, 0.5, 0.5], order)
    out = alternate(Pair(a, b, difference=True), 4, log=lambda _: None)
    assert [r["value"] for r in out["rounds"]] == [1.0, 2.4, 0.9, 1.1]
    assert out["median"] == 1.05 and out["min"] == 0.9 and out["max"] == 2.4
    assert out["how"] == "A - B"


def test_a_pair_that_fails_is_an_error_of_its_own_and_the_others_are_measured():
    def broken() -> float:
        raise RuntimeError("perf_analyzer exit 1: no such model\nmore")

    order: list[str] = []
    pairs = {
        "vs_perf_analyzer": Pair(_side("ours", [1.0] * 2, order), Side("perf_analyzer", broken)),
        "served_vs_inprocess": Pair(_side("a", [9.0] * 2, order), _side("b", [10.0] * 2, order)),
    }
    done, errors = measure(pairs, 2, log=lambda _: None)
    assert errors == {"paired vs_perf_analyzer": "perf_analyzer exit 1: no such model"}
    assert list(done) == ["served_vs_inprocess"] and done["served_vs_inprocess"]["median"] == 0.9
