"""Reference statistics files: `bench stats` -> .npz -> a cell's FD equals FD against the dataset; third-party
layouts (pytorch-fid / clean-fid, ADM) load; every bad file is one line naming it, exit 2, FILE:LINE in a suite."""

from __future__ import annotations

import json
import sqlite3
import textwrap

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.metrics.frechet import FeatureStats
from bench.metrics.statsfile import comparability, load_stats_file, pipeline_fingerprint

SUITE = """
name: stats-roundtrip
dataset: {name: shapes, split: eval}
samples: 100
base_seed: 0
batch_size: 100
timeout: 300
samplers:
  - {id: euler, adapter: teacher-euler}
axes:
  nfe: [1]
  resolution: [16]
  hardware: [cpu]
metrics:
  fd: {feature_space: pixels, bootstrap: 30}
  fd:pixels: {reference_stats: REF, bootstrap: 30}
report: {grid: 0, enabled: true}
"""


def _fd_rows(store) -> pd.DataFrame:
    with sqlite3.connect(store) as db:
        return pd.read_sql_query("SELECT m.* FROM metrics m", db).set_index("name")


def test_round_trip_stats_file_gives_the_datasets_fd_and_a_third_party_file_is_flagged(tmp_path, capsys):
    ref = tmp_path / "stats" / "shapes16.npz"
    assert main(["stats", "shapes", "--split", "eval", "--samples", "100", "--resolution", "16",
                 "--feature-space", "pixels", "-o", str(ref)]) == 0
    sf = load_stats_file(ref)
    assert sf.layout == "bench" and sf.stats.n == 100 and sf.fingerprint["feature_space"] == "pixels"
    assert sf.fingerprint["n"] == 100 and sf.fingerprint["uint8"].startswith("float32")

    suite = tmp_path / "suite.yaml"  # the path is relative to the suite file, not the current directory
    suite.write_text(textwrap.dedent(SUITE).lstrip().replace("REF", "stats/shapes16.npz"))
    store = tmp_path / "runs" / "r.sqlite"
    report = tmp_path / "report.html"
    assert main(["run", str(suite), "--store", str(store), "--no-progress", "--report", str(report)]) == 0
    rows = _fd_rows(store)
    a, b = rows.loc["fd"], rows.loc["fd:pixels"]
    assert abs(a.value - b.value) <= 1e-9 * abs(a.value) and a.value > 0
    assert abs(a.ci_low - b.ci_low) <= 1e-9 * abs(a.ci_low) and abs(a.ci_high - b.ci_high) <= 1e-9 * a.ci_high
    pa, pb = json.loads(a.provenance), json.loads(b.provenance)
    assert pa["fingerprint"] == pb["fingerprint"] and pb["comparable"] is True
    assert pb["reference"]["layout"] == "bench" and pb["reference"]["sha256"] == sf.sha256
    assert pb["noise_floor"] is None and "statistics file" in pb["noise_floor_skipped"]
    assert "fd_floor:pixels" not in rows.index and "fd_floor" in rows.index
    assert "not comparable" not in report.read_text() and "comparability unknown" not in report.read_text()

    # The same mu / sigma written by numpy alone (pytorch-fid's layout): same FD, comparability unknown, and the
    # report says so next to the FD.
    third = tmp_path / "stats" / "pytorch_fid.npz"
    np.savez(third, mu=sf.stats.mean, sigma=sf.stats.cov)
    assert main(["run", str(suite), "--store", str(store), "--no-progress", "--report", str(report),
                 "--set", "metrics.fd:pixels.reference_stats=stats/pytorch_fid.npz"]) == 0
    with sqlite3.connect(store) as db:
        last = pd.read_sql_query("SELECT m.* FROM metrics m JOIN cells c ON c.cell_key = m.cell_key "
                                 "WHERE m.name = 'fd:pixels'", db)
    prov = [json.loads(p) for p in last.provenance]
    third_row = last[[p["reference"]["layout"] == "mu-sigma" for p in prov]].iloc[0]
    assert abs(third_row.value - a.value) <= 1e-9 * a.value
    p3 = json.loads(third_row.provenance)
    assert p3["comparable"] == "unknown" and "pytorch_fid.npz" in p3["comparability"]
    html = report.read_text()
    assert "comparability unknown" in html and "carries no pipeline fingerprint" in html


def test_third_party_layouts_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu, sigma=sigma)  # pytorch-fid --save-stats
    np.savez_compressed(tmp_path / "clean_fid.npz", mu=mu.astype(np.float32), sigma=sigma)  # clean-fid
    np.savez(tmp_path / "adm.npz", arr_0=np.zeros((37, 8, 8, 3), np.uint8), mu=mu, sigma=sigma,
             mu_s=mu[:4], sigma_s=sigma[:4, :4])  # guided-diffusion reference batch
    for name, layout, rows in (("pytorch_fid", "mu-sigma", None), ("clean_fid", "mu-sigma", None), ("adm", "adm", 37)):
        sf = load_stats_file(tmp_path / f"{name}.npz")
        assert (sf.layout, sf.stats.n, sf.stats.dim, sf.fingerprint, sf.arr_0_rows) == (layout, -1, 16, None, rows)
        np.testing.assert_allclose(sf.stats.mean, mu, rtol=1e-6)
        np.testing.assert_array_equal(sf.stats.cov, sigma)
        assert comparability({}, sf)[0] == "unknown"


def test_fingerprint_mismatch_is_not_comparable(tmp_path):
    from bench.metrics.features import build_feature_space

    native, clean = build_feature_space("pixels"), build_feature_space("pixels", {"resize": "clean"})
    x = np.random.default_rng(1).normal(size=(100, 64))
    FeatureStats.from_features(x)
    from bench.metrics.statsfile import write_stats_file

    path = write_stats_file(tmp_path / "clean.npz", FeatureStats.from_features(x), pipeline_fingerprint(clean, 100),
                            {"test": True})
    ok, note = comparability(pipeline_fingerprint(native, 50), load_stats_file(path))
    assert ok is False and note.startswith("not comparable with clean.npz: preprocessing")
    ok, _ = comparability(pipeline_fingerprint(clean, 50), load_stats_file(path))  # N differs: still comparable
    assert ok is True


def _bad_files(tmp_path):
    d = 8
    mu, sigma = np.zeros(d), np.eye(d)
    (tmp_path / "text.npz").write_text("not a zip")
    np.save(tmp_path / "single.npy", mu)
    np.savez(tmp_path / "nosigma.npz", mu=mu)
    np.savez(tmp_path / "shape.npz", mu=mu, sigma=np.eye(d + 1))
    np.savez(tmp_path / "nan.npz", mu=np.full(d, np.nan), sigma=sigma)
    np.savez(tmp_path / "pickled.npz", mu=np.array([{"a": 1}], dtype=object), sigma=sigma)
    np.savez(tmp_path / "asym.npz", mu=mu, sigma=np.triu(np.ones((d, d))))
    np.savez(tmp_path / "strings.npz", mu=np.array(["a"] * d), sigma=sigma)
    return {
        "missing.npz": "no such reference statistics file",
        "text.npz": "not an .npz file of reference statistics",
        "single.npy": "a single .npy array",
        "nosigma.npz": "missing sigma (has: mu)",
        "shape.npz": "expected mu (D,) and sigma (D, D)",
        "nan.npz": "`mu` holds 8 non-finite values",
        "pickled.npz": "`mu` is a pickled object array; refused",
        "asym.npz": "sigma is not symmetric",
        "strings.npz": "`mu` has dtype <U1; expected real numbers",
    }


def test_every_bad_file_is_one_line_naming_it(tmp_path):
    for name, message in _bad_files(tmp_path).items():
        with pytest.raises(BenchError) as e:
            load_stats_file(tmp_path / name)
        text = str(e.value)
        assert name in text and message in text and "\n" not in text, (name, text)


def test_dimension_that_does_not_match_the_feature_space(tmp_path):
    from bench.metrics.features import build_feature_space
    from bench.metrics.statsfile import check_dim

    np.savez(tmp_path / "d8.npz", mu=np.zeros(8), sigma=np.eye(8))
    with pytest.raises(BenchError, match=r"d8.npz: statistics have D=8 features but feature space pixels gives D=64"):
        check_dim(load_stats_file(tmp_path / "d8.npz"), build_feature_space("pixels"))


SUITE_ERR = """
name: bad-stats
dataset: {name: shapes, split: eval}
samples: 100
samplers:
  - {id: euler, adapter: teacher-euler}
axes: {nfe: [1], resolution: [16], hardware: [cpu]}
metrics:
  fd:
    feature_space: pixels
    OPTIONS
"""


@pytest.mark.parametrize("options,message", [
    ("reference_stats: missing.npz", "missing.npz: no such reference statistics file"),
    ("reference_stats: text.npz", "text.npz: not an .npz file of reference statistics"),
    ("reference_stats: pickled.npz", "`mu` is a pickled object array"),
    ("reference_stats: nosigma.npz", "missing sigma"),
    ("reference_stats: nan.npz", "non-finite"),
    ("reference_stats: 3", "reference_stats must be the path of an .npz file"),
    ("{reference_stats: shape.npz, fd_inf: true}", "fd_inf needs the reference features"),
])
def test_suite_reports_a_bad_reference_stats_file_at_load_with_file_and_line(tmp_path, capsys, options, message):
    _bad_files(tmp_path)
    text = textwrap.dedent(SUITE_ERR).lstrip()
    if options.startswith("{"):
        text = text.replace("    feature_space: pixels\n    OPTIONS\n", "")
        text = text.replace("  fd:\n", f"  fd: {options[:-1]}, feature_space: pixels}}\n")
    else:
        text = text.replace("OPTIONS", options)
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    assert main(["run", str(suite), "--dry-run", "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "reference_stats" in ln)
    assert err.startswith(f"bench: error: {suite}:{line}: metrics.fd.reference_stats: ") and message in err, err
    assert "\n" not in err


def test_fd_floor_cannot_use_a_stats_file_and_a_changed_file_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "ok.npz", mu=np.zeros(64), sigma=np.eye(64))
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE_ERR).lstrip().replace("  fd:\n", "  fd_floor:\n")
                     .replace("OPTIONS", "reference_stats: ok.npz"))
    assert main(["run", str(suite), "--dry-run", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "fd_floor cannot use a statistics file" in capsys.readouterr().err
    sf = load_stats_file(tmp_path / "ok.npz")
    np.savez(tmp_path / "ok.npz", mu=np.ones(64), sigma=np.eye(64))
    with pytest.raises(BenchError, match=r"ok\.npz: its sha256 .* is not the .* recorded when the suite was loaded"):
        load_stats_file(tmp_path / "ok.npz", sf.sha256)


def test_stats_command_errors_are_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["stats", str(tmp_path / "empty"), "-o", str(tmp_path / "o.npz")], "no images"),
        (["stats", "no-such-thing", "-o", str(tmp_path / "o.npz")], "not a folder, and not a dataset"),
        (["stats", "shapes", "-o", str(tmp_path / "o.npz")], "give --resolution R and --samples N"),
        (["stats", "shapes", "--resolution", "16", "--samples", "10", "-o", str(tmp_path / "o.txt")],
         "ending in .npz"),
        (["stats", "shapes", "--resolution", "16", "--samples", "10", "--feature-space", "pixels",
          "-o", str(tmp_path / "o.npz")], "needs more samples than feature dimensions"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)
    assert not (tmp_path / "o.npz").exists()
