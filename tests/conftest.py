from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # spawned workers inherit sys.path, so tests.plugins imports there too
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory):
    """Tiny diffusers pipelines in a fresh folder (built lazily, once per module), the hub offline, one thread."""
    import torch

    root = tmp_path_factory.mktemp("tiny")
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_TINY_DIR", str(root))
    mp.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield root
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is as fast and does not stall when CI's cores are shared."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite YAML (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text).lstrip())
        return p

    return write


TINY_SUITE = """
name: tiny
dataset: {{name: gmm, split: eval, components: 4}}
samples: {samples}
base_seed: 0
batch_size: 16
timeout: {timeout}
samplers:
{samplers}
axes:
  nfe: [1, 2, 4]
  resolution: [4]
  hardware: [cpu]
metrics:
  tests.plugins.metrics:sample_stats: {{}}
  latency: {{batch_sizes: [1, 4], min_run_time: 0.01, max_run_time: 0.05}}
  memory: {{}}
report: {{grid: 2, enabled: false}}
"""


@pytest.fixture
def tiny_suite(write_suite):
    def make(samplers: str, samples: int = 32, timeout: float = 60, name: str = "suite.yaml") -> Path:
        body = TINY_SUITE.format(samples=samples, timeout=timeout, samplers=textwrap.indent(samplers.strip(), "  "))
        return write_suite(body, name)

    return make


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reverse-order", action="store_true",
                     help="run the collected tests in reverse order (a check that no test needs another's leftovers)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse-order"):
        items.reverse()
