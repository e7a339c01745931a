"""The parts of the real-model support that need no diffusers: the prompt dataset, the GPU suites, `doctor`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.errors import BenchError

ROOT = Path(__file__).resolve().parents[1]


def test_prompt_dataset_with_reference_folder(tmp_path: Path) -> None:
    from PIL import Image

    from bench.datasets import build_dataset

    (tmp_path / "p.txt").write_text("# captions\nfirst prompt\n\nsecond prompt\n")
    ref = tmp_path / "ref" / "sub"
    ref.mkdir(parents=True)
    for i, size in enumerate([(40, 30), (30, 40), (16, 16)]):
        Image.new("RGB", size, (i * 80, 10, 200)).save(ref / f"{i}.png")
    ds = build_dataset("prompts", {"file": str(tmp_path / "p.txt"), "reference": str(tmp_path / "ref"),
                                   "classes": 10})
    c = ds.conditions([0, 1, 2, 13])
    assert c.prompts == ["first prompt", "second prompt", "first prompt", "second prompt"]
    assert c.labels == [0, 1, 2, 3] and ds.conditioning == "text"
    img = ds.images([0, 2], 8)
    assert img.dtype == torch.uint8 and img.shape == (2, 3, 8, 8) and int(img[1, 0, 4, 4]) == 160
    with pytest.raises(BenchError, match="holds 3 images"):
        ds.images([3], 8)
    plain = build_dataset("prompts", {})
    assert len(plain.conditions(range(30)).prompts) == 30 and plain.conditioning == "text"
    with pytest.raises(BenchError, match="no reference images"):
        plain.images([0], 8)
    assert build_dataset("prompts", {"classes": 5}).conditions([7]).labels == [2]
    assert ds.key() != build_dataset("prompts", {"file": str(tmp_path / "p.txt")}).key()


def test_suites_for_gpu_users_validate() -> None:
    from bench.plan import plan
    from bench.suite import load_suite

    for name in ("tiny_diffusers", "sdxl_distilled", "imagenet64_cm_vs_flowmap"):
        suite = load_suite(ROOT / "suites" / f"{name}.yaml")
        assert plan(suite, check_hardware=False)


def test_doctor_rows_for_configured_models() -> None:
    from bench.adapters.hf.weights import offline_status

    rows = offline_status([str(ROOT / "suites" / "tiny_diffusers.yaml")])
    names = " ".join(r[0] for r in rows)
    assert "tiny_diffusers.yaml:sdxl-turbo model tiny:sdxl" in names
    assert "default sdxl-turbo model stabilityai/sdxl-turbo" in names
    assert all(ok for name, ok, _ in rows if "tiny:" in name)


def test_a_tiny_spec_is_present_only_if_it_names_a_real_tiny_model(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # `bench doctor` reports every tiny: row "ok" only because is_present says so: a typo must not pass
    from bench.adapters.hf import tiny
    from bench.adapters.hf.weights import is_present

    monkeypatch.setenv(tiny.ENV_VAR, str(tmp_path))
    ok, detail = is_present("tiny:sdxl-nope")
    assert not ok and "unknown tiny model 'tiny:sdxl-nope'" in detail and "sdxl" in detail
    assert is_present("tiny:sdxl")[0] and "built on first use" in is_present("tiny:sdxl")[1]  # not built yet
    (tmp_path / "sdxl").mkdir()
    (tmp_path / "sdxl" / "unet_1step.safetensors").write_bytes(b"")
    assert is_present("tiny:sdxl/unet_1step.safetensors") == (True, str(tmp_path / "sdxl" / "unet_1step.safetensors"))
    ok, detail = is_present("tiny:sdxl/unet_3step.safetensors")
    assert not ok and "unet_3step.safetensors does not exist" in detail


def _fake_cache(root: Path, repo: str, files: list[str]) -> Path:
    """A Hugging Face cache entry laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>)."""
    folder = root / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / "0123abcd"
    for f in files:
        (snap / f).parent.mkdir(parents=True, exist_ok=True)
        (snap / f).write_text("{}")
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    return snap


def test_weights_are_found_in_the_cache_layout_without_the_hub(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.adapters.hf.weights import is_present, resolve_file, resolve_model
    from bench.errors import MissingWeightsError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snap = _fake_cache(tmp_path, "stabilityai/sdxl-turbo", ["model_index.json", "unet/config.json"])
    _fake_cache(tmp_path, "ByteDance/SDXL-Lightning", ["sdxl_lightning_4step_unet.safetensors"])
    assert resolve_model("stabilityai/sdxl-turbo").ref == str(snap)
    assert resolve_file("ByteDance/SDXL-Lightning/sdxl_lightning_4step_unet.safetensors", "checkpoints").ref \
        .endswith("snapshots/0123abcd/sdxl_lightning_4step_unet.safetensors")
    assert is_present("stabilityai/sdxl-turbo") == (True, str(snap))
    ok, detail = is_present("ByteDance/SDXL-Lightning/sdxl_lightning_8step_unet.safetensors", "file")
    assert not ok and "hf download ByteDance/SDXL-Lightning sdxl_lightning_8step_unet.safetensors" in detail
    with pytest.raises(MissingWeightsError, match=r"'stabilityai/stable-diffusion-xl-base-1.0' .*hf download"):
        resolve_model("stabilityai/stable-diffusion-xl-base-1.0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # forces offline even where a sampler would allow downloads
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE is set"):
        resolve_model("stabilityai/stable-diffusion-xl-base-1.0", local_files_only=False)


def test_prefetch_prints_exactly_the_files_a_suite_needs() -> None:
    from bench.adapters.hf.__main__ import prefetch_commands

    cmds = prefetch_commands([str(ROOT / "suites" / "sdxl_distilled.yaml")])
    assert 'hf download stabilityai/sdxl-turbo --include "*.json" --include "*.txt" ' \
           '--include "*/*.fp16.safetensors"' in cmds
    assert "hf download ByteDance/SDXL-Lightning sdxl_lightning_1step_unet_x0.safetensors" in cmds
    assert "hf download tianweiy/DMD2 dmd2_sdxl_4step_unet_fp16.bin" in cmds
    assert "hf download latent-consistency/lcm-lora-sdxl pytorch_lora_weights.safetensors" in cmds
    assert len(cmds) == len(set(cmds)) and not any("tiny:" in c for c in cmds)
