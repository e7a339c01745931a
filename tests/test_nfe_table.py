"""scripts/nfe_table.py: its tie-aware rankings use the paired test (bench.analysis) when the store keeps
per-image evidence, and the seed spread of the first release when it does not."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.synthetic import FakeSampler, make_store

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = (
    FakeSampler("flowmap-lmd", "flow_map", 9.0, 0.9, 2.1),
    FakeSampler("flowmap-meanflow", "flow_map", 9.3, 0.9, 2.0),  # within a few % of lmd
    FakeSampler("consistency", "consistency", 12.0, 0.5, 2.0),
    FakeSampler("lcm", "lcm", 14.0, 0.6, 2.2),
    FakeSampler("turbo", "adversarial", 8.0, 0.2, 2.0, nfe=(1, 2, 4)),
    FakeSampler("teacher-euler", "ode", 60.0, 1.0, 2.0),
)


@pytest.fixture(scope="module")
def nfe_table():
    spec = importlib.util.spec_from_file_location("nfe_table", ROOT / "scripts" / "nfe_table.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nfe_table"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    """The same synthetic nfe_sweep twice: with per-image evidence, and as a first-release store without it."""
    root = tmp_path_factory.mktemp("nfe")
    paths = []
    for name in ("paired", "old"):
        path = root / name / "bench.sqlite"
        make_store(path, suite="nfe_sweep", samplers=SAMPLERS, resolutions=(16,), hardware=("cpu",), grid=0,
                   failed=None)
        paths.append(path)
    with sqlite3.connect(paths[1]) as db:
        db.execute("DROP TABLE evidence")
        db.execute("DROP TABLE meta")
    return paths[0], paths[1]


def test_ranking_is_paired_when_the_store_has_evidence(nfe_table, stores, capsys, tmp_path):
    store, _ = stores
    df = nfe_table.load(store, "nfe_sweep")
    paired = nfe_table.PairedFD(store, df)
    assert paired and len(paired.evidence) == len(df)
    df16 = df[df.resolution == 16]
    # a seed spread wider than every gap: the old rule calls everything tied ...
    wide = pd.Series({(r.sampler, r.nfe): 1e3 for r in df16.itertuples()})
    order = [s.id for s in SAMPLERS]
    assert "<" not in nfe_table.ranking(df16, wide, 2, order)
    # ... the paired test tells them apart, the two flow maps (a few % apart) included
    line = nfe_table.ranking(df16, wide, 2, order, paired)
    assert "flowmap-lmd" in line and "=" not in line and "*" not in line, line
    lmd, mf = df16.set_index(["sampler", "nfe"]).loc[[("flowmap-lmd", 2), ("flowmap-meanflow", 2)], "cell_key"]
    assert paired.verdict(lmd, mf) in ("better", "worse")

    out = tmp_path / "t.json"
    assert nfe_table.main(["--store", str(store), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the paired 95% CI of the FD difference excludes 0" in text
    assert "- NFE 1: " in text
    checks = json.loads(out.read_text())["checks"]
    assert checks["ranking_method"] == "paired"
    assert "worse_than_fewer_steps_paired" in checks["consistency_degrades"]


def test_old_store_falls_back_to_the_seed_spread(nfe_table, stores, capsys):
    paired_store, old = stores
    df = nfe_table.load(old, "nfe_sweep")
    assert not nfe_table.PairedFD(old, df)
    # with a seed store: rankings by seed spread, said so
    assert nfe_table.main(["--store", str(old), "--seed-store", str(paired_store)]) == 0
    text = capsys.readouterr().out
    assert "'<' beats the seed spread" in text and "keeps no per-image evidence" in text
    assert '"ranking_method": "seed spread"' in text
