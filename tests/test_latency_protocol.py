"""Latency protocol: per-cell runtime state restored in a reused worker."""

from __future__ import annotations

import torch

THREADS_SUITE = """
name: threads
dataset: {name: gmm, split: eval, components: 4}
samples: 4
batch_size: 4
samplers:
  - {id: euler, adapter: analytic-euler, options: {components: 4}}
axes: {nfe: [1], resolution: [4], hardware: ["cpu:threads=1", cpu]}
metrics:
  latency: {batch_sizes: [1], min_run_time: 0.005, max_run_time: 0.02, calibrate: false}
report: {grid: 0, enabled: false}
"""


def test_reused_worker_restores_threads_after_a_single_thread_cell(write_suite, tmp_path):
    from bench.plan import plan
    from bench.run import make_tasks
    from bench.store import Store
    from bench.suite import load_suite
    from bench.worker import Worker

    suite = load_suite(write_suite(THREADS_SUITE))
    with Store(tmp_path / "r.sqlite") as store:
        tasks = make_tasks(suite, plan(suite), store)
    tasks.sort(key=lambda t: t.cell.hardware != "cpu:threads=1")  # the 1-thread cell first
    assert [t.cell.hardware for t in tasks] == ["cpu:threads=1", "cpu"]
    before = torch.get_num_threads()
    default = 2  # the process default for this test; differs from 1 even on a 1-core machine
    torch.set_num_threads(default)
    try:
        worker = Worker()  # one worker reused for both cells, as the local executor does
        results = [worker.run(t) for t in tasks]
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    threads = []
    for r in results:
        assert r.status == "done", r.error
        threads.append(next(m for m in r.metrics if m.name == "latency_ms_batch1").provenance["threads"])
    assert threads == [1, default]
    assert after == default


def test_cell_runtime_restores_threads_after_an_error_and_after_a_cell_changed_them():
    from bench.runtime import cell_runtime

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        try:
            with cell_runtime(threads=1) as state:
                assert state == {"threads": 1} and torch.get_num_threads() == 1
                raise RuntimeError("cell failed")
        except RuntimeError:
            pass
        assert torch.get_num_threads() == 2
        with cell_runtime():  # a plain cell that sets threads itself (a sampler calling set_num_threads)
            torch.set_num_threads(1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
