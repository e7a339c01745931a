"""Pareto analysis: fronts in 2-D and n-D, ties, missing values, directions, dominance pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.report.pareto import dominance_pairs, dominates, front_steps, pareto_front

# (latency ms, FD): lower is better for both
LAT_FD = [(10.0, 5.0), (20.0, 3.0), (15.0, 6.0), (40.0, 1.0), (40.0, 2.0), (5.0, 9.0)]


def test_2d_front_lower_is_better():
    assert pareto_front(LAT_FD, ["min", "min"]) == [0, 1, 3, 5]


def test_direction_from_higher_is_better_flags():
    # CLIP score: higher is better; latency lower. Same geometry as above with the sign of y flipped.
    pts = [(lat, -fd) for lat, fd in LAT_FD]
    assert pareto_front(pts, [False, True]) == [0, 1, 3, 5]
    assert pareto_front(pts, ["lower", "higher"]) == [0, 1, 3, 5]
    # flipping a direction changes the answer
    assert pareto_front(LAT_FD, [False, True]) == [5]  # (5 ms, 9) is fastest and "best"
    assert pareto_front(LAT_FD, [True, False]) == [3]  # slowest and lowest FD


def test_ties_are_all_kept_and_do_not_dominate_each_other():
    pts = [(1.0, 1.0), (1.0, 1.0), (2.0, 2.0)]
    assert pareto_front(pts, ["min", "min"]) == [0, 1]
    assert not dominates(pts[0], pts[1], ["min", "min"])
    pairs = dominance_pairs(pts, ["min", "min"])
    assert {(p.winner, p.loser) for p in pairs} == {(0, 2), (1, 2)}


def test_equal_in_one_metric_better_in_other_dominates():
    assert dominates((1.0, 2.0), (1.0, 3.0), ["min", "min"])
    assert pareto_front([(1.0, 2.0), (1.0, 3.0)], ["min", "min"]) == [0]


def test_missing_values_are_never_on_the_front_and_never_dominate():
    pts = [(1.0, None), (2.0, 2.0), (float("nan"), 0.0), (3.0, 3.0)]
    assert pareto_front(pts, ["min", "min"]) == [1]
    assert not dominates((1.0, None), (2.0, 2.0), ["min", "min"])
    assert {(p.winner, p.loser) for p in dominance_pairs(pts, ["min", "min"])} == {(1, 3)}
    assert pareto_front([(None, None)], ["min", "min"]) == []


def test_n_dimensional_front():
    # (FD down, CLIP up, latency down, memory down)
    pts = [
        (3.0, 25.0, 10.0, 100.0),  # 0: on front
        (3.0, 25.0, 10.0, 120.0),  # 1: dominated by 0 (memory)
        (2.0, 24.0, 30.0, 100.0),  # 2: best FD
        (4.0, 26.0, 50.0, 90.0),  # 3: best CLIP and memory
        (5.0, 20.0, 60.0, 200.0),  # 4: dominated by everything
    ]
    dirs = [False, True, False, False]
    assert pareto_front(pts, dirs) == [0, 2, 3]
    losers = {p.loser for p in dominance_pairs(pts, dirs)}
    assert losers == {1, 4}
    # in 1-D only the best survives
    assert pareto_front([[v] for v in (3.0, 1.0, 2.0, 1.0)], ["min"]) == [1, 3]


def test_empty_and_bad_input():
    assert pareto_front([], ["min"]) == []
    assert dominance_pairs([], ["min"]) == []
    with pytest.raises(ValueError):
        pareto_front([(1.0, 2.0)], ["min"])
    with pytest.raises(ValueError):
        pareto_front([(1.0, 2.0)], ["min", "sideways"])


def test_dominance_pairs_groups_front_and_significance():
    # sampler a @ 1, a @ 2 and b @ 1; intervals on FD only partly separate
    pts = [(2.0, 10.0), (1.0, 20.0), (5.0, 30.0)]  # (FD, latency)
    low = [(1.8, 9.0), (0.9, 19.0), (4.0, 29.0)]
    high = [(2.2, 11.0), (1.1, 21.0), (6.0, 31.0)]
    groups = ["a", "a", "b"]
    pairs = dominance_pairs(pts, ["min", "min"], low=low, high=high, groups=groups)
    assert {(p.winner, p.loser) for p in pairs} == {(0, 2), (1, 2)}  # nothing inside group a
    p02 = next(p for p in pairs if p.winner == 0)
    assert p02.better == (0, 1) and p02.significant == (0, 1)
    # overlapping FD intervals: the FD gain is not significant, the latency gain is
    high_overlap = [(4.5, 11.0), (1.1, 21.0), (6.0, 31.0)]
    p = next(p for p in dominance_pairs(pts, ["min", "min"], low=low, high=high_overlap) if p.winner == 0)
    assert p.significant == (1,)
    # higher-is-better columns orient their intervals too
    clip = [(30.0,), (20.0,)]
    p = dominance_pairs(clip, [True], low=[(29.0,), (19.0,)], high=[(31.0,), (21.0,)])[0]
    assert (p.winner, p.loser, p.significant) == (0, 1, (0,))
    p = dominance_pairs(clip, [True], low=[(25.0,), (19.0,)], high=[(31.0,), (26.0,)])[0]
    assert p.significant == ()
    # only_front keeps winners on the front: 1 dominates 2 but is itself dominated by 0
    chain = [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert {(p.winner, p.loser) for p in dominance_pairs(chain, ["min", "min"], only_front=True)} == {(0, 1), (0, 2)}


def test_front_steps_orders_by_cost():
    lat = [10.0, 20.0, 15.0, 40.0, 5.0]
    fd = [5.0, 3.0, 6.0, 1.0, 9.0]
    assert front_steps(lat, fd) == [4, 0, 1, 3]
    clip = [-f for f in fd]
    assert front_steps(lat, clip, y_higher_is_better=True) == [4, 0, 1, 3]


coord = st.one_of(st.integers(-3, 3).map(float), st.just(math.nan))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(coord, coord, coord), max_size=12), st.lists(st.booleans(), min_size=3, max_size=3))
def test_front_properties(points, dirs):
    front = pareto_front(points, dirs)
    valid = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    # nothing on the front is dominated; everything valid and off the front is dominated by a front point
    for i in front:
        assert i in valid
        assert not any(dominates(points[j], points[i], dirs) for j in valid)
    for i in set(valid) - set(front):
        assert any(dominates(points[j], points[i], dirs) for j in front)
    # brute-force agreement with dominance_pairs
    losers = {p.loser for p in dominance_pairs(points, dirs)}
    assert sorted(set(valid) - losers) == front
    # invariant under permutation
    perm = np.random.default_rng(0).permutation(len(points))
    shuffled = [points[i] for i in perm]
    assert sorted(int(perm[i]) for i in pareto_front(shuffled, dirs)) == front
