"""Latency protocol: min runs within a hard cap, unstable flags, CPU time on one thread, per-cell threads restored."""

from __future__ import annotations

import time

import pytest
import torch

from bench.metrics.latency import LatencyOptions, measure, separated, stability

CPU = torch.device("cpu")


class Alternating:
    """Odd calls sleep `slow` s, even calls `fast` s. The first timed call (torch's block-size estimate) is slow
    and longer than its 0.05 s probe, so every block is one call and the blocks alternate too."""

    def __init__(self, slow: float = 0.06, fast: float = 0.005) -> None:
        self.calls, self.slow, self.fast = 0, slow, fast

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.slow if self.calls % 2 else self.fast)


def test_min_runs_extends_past_max_run_time():
    # one 60 ms call outlasts max_run_time, so adaptive_autorange alone stops after a single run (and, longer than
    # torch's 0.05 s block-size probe, each run is one call whatever the timer overhead on a busy machine)
    r = measure(lambda: time.sleep(0.06), 1, CPU, warmup=0, min_run_time=0.001, max_run_time=0.01,
                min_runs=5, max_time=5.0)
    assert r.runs >= 5 and r.runs_added >= 1 and not r.capped
    assert r.number_per_run == 1
    assert r.q25_s <= r.median_s <= r.q75_s


def test_max_time_caps_the_extension_and_the_result_is_unstable():
    r = measure(lambda: time.sleep(0.06), 1, CPU, warmup=0, min_run_time=0.001, max_run_time=0.01,
                min_runs=1000, max_time=0.5)
    assert r.capped and 1 <= r.runs < 1000
    unstable, reason = stability(r.runs, *r.per_image_ms(), min_runs=1000)
    assert unstable and f"{r.runs} timed run" in reason and "min_runs 1000" in reason


def test_stability_rule_on_constructed_numbers():
    assert stability(5, 10.0, 9.0, 11.0, 5, 0.25) == (False, "")
    assert stability(10, 10.0, 8.75, 11.25, 5, 0.25) == (False, "")  # IQR exactly 25 %: still stable
    few = stability(3, 10.0, 9.0, 11.0, 5, 0.25)
    assert few == (True, "3 timed runs < min_runs 5")
    assert stability(1, 10.0, 10.0, 10.0, 5, 0.25) == (True, "1 timed run < min_runs 5")
    wide = stability(20, 10.0, 7.0, 13.0, 5, 0.25)
    assert wide == (True, "IQR is 60% of the median > max_iqr_rel 0.25")
    both, reason = stability(2, 10.0, 5.0, 15.0, 5, 0.25)
    assert both and reason == "2 timed runs < min_runs 5; IQR is 100% of the median > max_iqr_rel 0.25"
    assert stability(20, 0.0, 0.0, 0.0)[0] and stability(20, float("nan"), 1.0, 2.0)[0]


def test_separated_needs_disjoint_iqrs():
    assert separated(1.0, 2.0, 3.0, 4.0) and separated(3.0, 4.0, 1.0, 2.0)
    assert not separated(1.0, 3.0, 3.0, 4.0)  # touching is a tie
    assert not separated(1.0, 5.0, 2.0, 3.0)
    with pytest.raises(ValueError):
        separated(2.0, 1.0, 3.0, 4.0)


def test_alternating_call_times_make_a_real_measurement_unstable():
    r = measure(Alternating(), 1, CPU, warmup=0, min_run_time=0.001, max_run_time=0.2, min_runs=5, max_time=5.0)
    assert r.number_per_run == 1 and r.runs >= 5
    unstable, reason = stability(r.runs, *r.per_image_ms())
    assert unstable and "IQR is" in reason


def test_cpu_time_counts_cpu_seconds_not_wall_seconds():
    def spin() -> None:  # 3 ms of CPU, however busy the machine is
        t0 = time.process_time()
        while time.process_time() - t0 < 0.003:
            pass

    busy = measure(spin, 2, CPU, warmup=0, min_run_time=0.01, max_run_time=0.05, min_runs=2, cpu_time=True)
    idle = measure(lambda: time.sleep(0.01), 2, CPU, warmup=0, min_run_time=0.01, max_run_time=0.1, min_runs=2,
                   cpu_time=True)
    assert busy.cpu_median_s is not None and idle.cpu_median_s is not None
    assert busy.cpu_median_s >= 0.003 and busy.median_s >= busy.cpu_median_s * 0.99
    assert idle.cpu_median_s < idle.median_s / 2  # sleeping costs wall time, not CPU time
    cpu = busy.cpu_per_image_ms()
    assert cpu is not None and cpu[1] <= cpu[0] <= cpu[2] and cpu[0] >= 1.5  # ms per image of a 2-image batch
    assert measure(spin, 1, CPU, warmup=0, min_run_time=0.005, max_run_time=0.02, min_runs=1).cpu_median_s is None


def test_latency_options_defaults_and_cap_check():
    o = LatencyOptions()
    assert (o.min_runs, o.max_time, o.max_iqr_rel, o.batch_sizes) == (5, 30.0, 0.25, [1, 16])
    with pytest.raises(ValueError, match="max_time"):
        LatencyOptions(max_run_time=40.0)

THREADS_SUITE = """
name: threads
dataset: {name: gmm, split: eval, components: 4}
samples: 4
batch_size: 4
samplers:
  - {id: euler, adapter: analytic-euler, options: {components: 4}}
axes: {nfe: [1], resolution: [4], hardware: ["cpu:threads=1", cpu]}
metrics:
  latency: {batch_sizes: [1, 2], min_run_time: 0.005, max_run_time: 0.02, calibrate: false}
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

    one, plain = ({m.name: m for m in r.metrics} for r in results)
    for metrics in (one, plain):
        for name in ("latency_ms_batch1", "latency_ms_per_image"):
            prov = metrics[name].provenance
            assert isinstance(prov["unstable"], bool) and isinstance(prov["unstable_reason"], str)
            assert prov["runs"] >= prov["min_runs"] == 5 and prov["max_time"] == 30.0
            assert prov["unstable"] == stability(prov["runs"], metrics[name].value, metrics[name].ci_low,
                                                 metrics[name].ci_high)[0]
    # the single-thread cell also records CPU time, per image at the largest batch and at batch 1
    for name, batch in (("latency_cpu_ms_batch1", 1), ("latency_cpu_ms_per_image", 2)):
        m = one[name]
        assert m.value is not None and m.value > 0 and not m.higher_is_better
        assert m.ci_low is not None and m.ci_high is not None and m.ci_low <= m.value <= m.ci_high
        assert m.n == m.provenance["runs"] >= 5
        assert m.provenance["batch_size"] == batch and m.provenance["threads"] == 1
        assert m.provenance["clock"] == "time.process_time" and "unstable" in m.provenance
    assert not any(n.startswith("latency_cpu") for n in plain)  # CPU time means something on one thread only

