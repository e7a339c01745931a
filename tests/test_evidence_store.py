"""Per-image evidence on disk, store and baseline versions, and the paired statistics they feed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import bench
from bench.analysis import (
    MIN_STRATUM,
    Candidate,
    PairedComparer,
    Timing,
    best_within_budgets,
    latency_verdict,
    resampling_plan,
    stratified_counts,
)
from bench.errors import BenchError
from bench.evidence import (
    FLOAT16_FD_RTOL,
    features_evidence,
    from_arrays,
    read_npz,
    to_arrays,
    values_evidence,
    write_npz,
)
from bench.gate import run_gate
from bench.metrics.frechet import FeatureStats, frechet_distance_from_stats
from bench.store import SCHEMA_VERSION, Store

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"


def _v1_store(tmp_path: Path) -> Path:
    """The committed first-release store (an SQL dump made by flowmap-bench 0.1.0), rebuilt as a file."""
    path = tmp_path / "v1.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript((FIXTURES / "store.sql").read_text())
    return path


def test_first_release_store_is_read_then_migrated(tmp_path):
    path = _v1_store(tmp_path)
    with Store(path, readonly=True) as st:  # read-only: no migration, still readable
        assert st.schema_version == 1
        df = st.results()
        assert st.evidence(df["cell_key"].iloc[0]) == {}
    assert set(df["metric"].dropna()) >= {"fd", "fd_floor", "latency_ms_per_image"}
    assert not df["unstable"].any()
    with Store(path) as st:
        assert st.schema_version == SCHEMA_VERSION
        meta = dict(st.db.execute("SELECT key, value FROM meta").fetchall())
    assert meta == {"schema_version": str(SCHEMA_VERSION), "migrated_from": "1"}
    after = bench.load_results(str(path))
    assert after["value"].tolist() == df["value"].tolist()  # migration keeps every number


def test_first_release_baseline_still_gates_and_says_it_is_unpaired(tmp_path):
    store = _v1_store(tmp_path)
    res = run_gate(FIXTURES / "baseline.json", store)
    assert res.exit_code == 0
    fd = [c for c in res.checks if c.metric == "fd"]
    assert fd and all("unpaired fallback" in c.note and "keeps no per-image evidence" in c.note for c in fd)


def test_a_newer_store_is_refused_in_one_line(tmp_path):
    path = _v1_store(tmp_path)
    with Store(path) as st, st.db:
        st.db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(BenchError, match=r"schema version 99; this flowmap-bench reads versions up to 3"):
        Store(path, readonly=True)


def _ref(d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(400, d))
    s = FeatureStats.from_features(x)
    return s.mean, s.cov


def test_features_are_kept_in_float16_only_when_fd_stays_within_tolerance(tmp_path):
    seeds = list(range(300))
    mean, cov = _ref(8)
    mild = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    arrays = to_arrays({"fd": features_evidence(mild, seeds, mean, cov)})
    assert arrays["fd|rows"].dtype == np.float16
    back = from_arrays(arrays)["fd"]
    full = frechet_distance_from_stats(FeatureStats.from_features(mild), FeatureStats(mean, cov, -1))
    half = frechet_distance_from_stats(FeatureStats.from_features(back.rows), FeatureStats(mean, cov, -1))
    assert abs(half - full) <= FLOAT16_FD_RTOL * full
    # a large offset with small spread: float16 loses the spread, so the rows stay float32
    hard = (1000.0 + 0.01 * np.random.default_rng(2).normal(size=(300, 8))).astype(np.float32)
    assert to_arrays({"fd": features_evidence(hard, seeds, mean + 1000.0, cov * 1e-4)})["fd|rows"].dtype == np.float32


def test_evidence_file_round_trips_and_a_changed_file_is_refused(tmp_path):
    mean, cov = _ref(4)
    ev = {"fd": features_evidence(np.ones((10, 4)), range(10), mean, cov, np.arange(10) % 2),
          "clip_score:x": values_evidence(np.arange(10.0), range(10))}
    path = tmp_path / "e.npz"
    sha = write_npz(path, to_arrays(ev))
    back = from_arrays(read_npz(path, sha))
    assert set(back) == {"fd", "clip_score:x"}
    assert np.array_equal(back["fd"].strata, np.arange(10) % 2) and back["clip_score:x"].strata is None
    assert np.array_equal(back["clip_score:x"].rows, np.arange(10.0))
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(BenchError, match=r"e\.npz does not match the sha256"):
        read_npz(path, sha)


def test_identical_cells_differ_by_exactly_zero_and_a_shift_is_seen():
    rng = np.random.default_rng(0)
    mean, cov = _ref(6)
    x = rng.normal(size=(200, 6))
    strata = np.arange(200) % 4
    a = features_evidence(x, range(200), mean, cov, strata)
    same = features_evidence(x.copy(), range(200), mean, cov, strata)
    pc = PairedComparer(resamples=200)
    p = pc.compare("fd", False, a, same)
    assert (p.delta, p.ci_low, p.ci_high) == (0.0, 0.0, 0.0) and p.verdict() == "tie"
    worse = pc.compare("fd", False, a, features_evidence(x + 0.3, range(200), mean, cov, strata))
    assert worse.verdict() == "worse" and worse.ci_low > 0 and "within conditions" in worse.method
    other_seeds = features_evidence(x, range(1, 201), mean, cov, strata)
    with pytest.raises(BenchError, match="different seeds"):
        pc.compare("fd", False, a, other_seeds)


def test_values_are_compared_with_their_direction():
    v = np.random.default_rng(3).normal(30, 5, size=300)
    a, b = values_evidence(v, range(300)), values_evidence(v + 1.0, range(300))
    p = PairedComparer(resamples=200).compare("clip_score", True, a, b)
    assert p.delta == pytest.approx(1.0) and p.verdict() == "better"
    assert p.verdict(tolerance=2.0) == "tie"


def test_resampling_within_conditions_keeps_each_conditions_count():
    strata = np.repeat(np.arange(5), MIN_STRATUM + 1)
    counts = stratified_counts(strata, 50, (0,))
    for s in range(5):
        assert np.all(counts[:, strata == s].sum(1) == MIN_STRATUM + 1)
    ev = values_evidence(np.zeros(strata.size), range(strata.size), strata)
    assert resampling_plan(ev, ev) is not None
    thin = values_evidence(np.zeros(10), range(10), np.arange(10))  # one image per prompt
    assert resampling_plan(thin, thin) is None


def test_latency_verdicts_need_separated_stable_iqrs():
    fast, slow = Timing(1.0, 0.9, 1.1), Timing(2.0, 1.8, 2.2)
    assert latency_verdict(slow, fast) == "faster" and latency_verdict(fast, slow) == "slower"
    assert latency_verdict(fast, Timing(1.05, 1.0, 1.2)) == "tie"
    assert latency_verdict(fast, Timing(2.0, 1.9, 2.1, unstable=True, reason="1 timed run")) == "unstable"


def test_best_within_budget_is_undecided_when_latencies_overlap():
    comparer = PairedComparer(resamples=50)
    a = Candidate("a", "a", quality=5.0, higher_is_better=False, timing=Timing(1.0, 0.9, 1.1))
    b = Candidate("b", "b", quality=3.0, higher_is_better=False, timing=Timing(1.05, 0.95, 1.15))
    c = Candidate("c", "c", quality=1.0, higher_is_better=False, timing=Timing(9.0, 8.0, 10.0, unstable=True))
    rows = best_within_budgets([a, b, c], comparer, "fd")
    assert [r.best.key for r in rows] == ["a", "b"]
    assert rows[0].latency_ties == ["b"] and not rows[0].decided  # b is better and maybe as fast
    assert rows[1].decided and rows[1].unstable == ["c"]


def test_per_image_precision_recall_indicators_average_to_torch_fidelitys_values():
    import torch
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    from bench.metrics.fidelity import pr_indicators

    rng = np.random.default_rng(5)
    f1 = torch.from_numpy(rng.normal(size=(150, 6)))
    f2 = torch.from_numpy(rng.normal(0.3, 1.1, size=(120, 6)))
    p, r = pr_indicators(f1, f2, 3, batch_size=64)
    out = prc_features_to_metric(f1, f2, prc_neighborhood=3, prc_batch_size=64, save_cpu_ram=True, verbose=False)
    assert p.shape == (150,) and r.shape == (120,)
    assert p.mean() == pytest.approx(out[KEY_METRIC_PRECISION], abs=1e-6)  # theirs: a float32 mean
    assert r.mean() == pytest.approx(out[KEY_METRIC_RECALL], abs=1e-6)


def test_kid_rows_average_to_the_full_sample_unbiased_mmd():
    from bench.metrics.fidelity import kid_influence_rows

    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(90, 5)), rng.normal(0.2, 1.0, size=(70, 5))

    def k(a, b):
        return (a @ b.T / 5 + 1.0) ** 3

    kxx, kyy = k(x, x), k(y, y)
    direct = ((kxx.sum() - np.trace(kxx)) / (90 * 89) + (kyy.sum() - np.trace(kyy)) / (70 * 69)
              - 2 * k(x, y).mean())
    kid, rows = kid_influence_rows(x, y, block=32)
    assert kid == pytest.approx(direct, rel=1e-12) and rows.mean() == pytest.approx(direct, rel=1e-12)
    # the rows' spread is the delta-method spread: close to the jackknife's on this size
    jack = np.array([kid_influence_rows(np.delete(x, i, 0), y)[0] for i in range(90)])
    jack_se = np.sqrt(89 / 90 * ((jack - jack.mean()) ** 2).sum())
    assert rows.std(ddof=1) / np.sqrt(90) == pytest.approx(jack_se, rel=0.15)


@pytest.mark.parametrize("content", [b"hello, not a database\n", b"SQLite format 3\x00" + b"\x00" * 200])
@pytest.mark.parametrize("command", [["export"], ["report"], ["gate", "--baseline", str(FIXTURES / "baseline.json")]])
def test_a_broken_store_file_is_one_line_and_exit_2(tmp_path, capsys, content, command):
    from bench.cli import main

    store = tmp_path / "broken.sqlite"
    store.write_bytes(content)
    assert main([*command, "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.sqlite cannot be opened" in err
    assert store.read_bytes() == content  # left as it was


def test_a_sample_exactly_on_a_k_nn_radius_is_inside_as_torch_fidelity_counts_it():
    """Kynkäänniemi et al.: a point is in the manifold when its distance to some reference point is at most that
    point's k-NN radius, ties included; torch-fidelity counts it so, and so must the per-image indicators."""
    import torch
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    from bench.metrics.fidelity import pr_indicators

    ref = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)  # every 1-NN radius is exactly 1
    gen = torch.tensor([[4.0], [5.5], [-1.0], [1.5]], dtype=torch.float64)  # 4 and -1 sit on a radius
    p, r = pr_indicators(gen, ref, 1)
    assert p.tolist() == [True, False, True, True]
    out = prc_features_to_metric(gen, ref, prc_neighborhood=1, save_cpu_ram=True, verbose=False)
    assert p.mean() == pytest.approx(out[KEY_METRIC_PRECISION]) and r.mean() == pytest.approx(out[KEY_METRIC_RECALL])


def test_kid_defaults_are_torch_fidelitys_cubic_kernel_and_seed_0():
    import torch
    from torch_fidelity.metric_kid import kid_features_to_metric

    from bench.metrics.fidelity import kid_from_kernel_rows

    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(120, 8)), rng.normal(0.2, 1.1, size=(110, 8))
    tf = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=7, kid_subset_size=50,
                                kid_kernel_poly_degree=3, kid_kernel_poly_coef0=1.0, rng_seed=0, verbose=False)
    mean, std = kid_from_kernel_rows(a, b, 7, 50)
    assert mean == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-9)
    assert std == pytest.approx(tf["kernel_inception_distance_std"], rel=1e-7)


def test_kid_from_kernel_rows_sums_every_kernel_block(monkeypatch):
    """The kernel is summed in column blocks to bound memory; with blocks far smaller than the sets (as 50k-image
    cells get) the result is the one-block result."""
    import bench.metrics.fidelity as fidelity

    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(150, 6)), rng.normal(0.1, 1.0, size=(140, 6))
    whole = fidelity.kid_from_kernel_rows(a, b, 9, 60, seed=3)
    monkeypatch.setattr(fidelity, "KERNEL_BLOCK", 1)  # 64 columns a block: 3 blocks of each set
    blocked = fidelity.kid_from_kernel_rows(a, b, 9, 60, seed=3)
    assert blocked == pytest.approx(whole, rel=1e-12)


def test_kid_rows_are_computed_in_float64_from_float32_features():
    from bench.metrics.fidelity import kid_influence_rows

    rng = np.random.default_rng(11)
    x, y = (rng.normal(size=(80, 16)) * 30).astype(np.float32), (rng.normal(size=(70, 16)) * 30).astype(np.float32)
    kid32, rows32 = kid_influence_rows(x, y)
    kid64, rows64 = kid_influence_rows(x.astype(np.float64), y.astype(np.float64))
    assert kid32 == pytest.approx(kid64, rel=1e-12) and rows32.dtype == np.float64
    np.testing.assert_allclose(rows32, rows64, rtol=1e-12)


def test_an_images_kid_row_rises_with_how_much_that_image_raises_kid():
    """Row i is KID plus image i's influence: leaving image i out lowers KID by about its influence / N, so the
    rows track the jackknife's per-image effect in sign and size (the sign pairs a worse image with a larger row)."""
    from bench.metrics.fidelity import kid_influence_rows

    rng = np.random.default_rng(12)
    x, y = rng.normal(0.3, 1.0, size=(60, 4)), rng.normal(size=(70, 4))
    kid, rows = kid_influence_rows(x, y)
    effect = np.array([kid - kid_influence_rows(np.delete(x, i, 0), y)[0] for i in range(60)])
    assert np.corrcoef(rows - kid, effect)[0, 1] > 0.95
