"""Student training drivers (tiny smoke runs from a tiny random teacher) and the student adapters on their output.

Nothing here needs trained weights: the teacher is a ~30k-parameter random U-Net written by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.adapters.protocol import SampleRequest
from bench.adapters.registry import resolve_sampler
from bench.adapters.students import ZooAdversarial, ZooConsistency, ZooFlowMap, ZooLCM
from bench.errors import BenchError, MissingWeightsError
from bench.hardware import HardwareSpec
from bench.metrics.nfe import NFECounter
from bench.zoo import checkpoints
from bench.zoo.students.tiny import save_teacher, tiny_teacher
from bench.zoo.students.train import SHIPPED, STUDENTS, recipe_for, train_student, zoo_train

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red circle", "a large blue square on the left", "a green cross at the top"]
ADAPTER = {"flowmap-lmd": ZooFlowMap, "flowmap-meanflow": ZooFlowMap, "consistency": ZooConsistency,
           "lcm": ZooLCM, "turbo": ZooAdversarial}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """Every shipped student trained for 2 steps (batch 3 at 16x16 + 1 at 32x32) from a random tiny teacher
    (on one thread, restored after this module by `one_thread`)."""
    out = tmp_path_factory.mktemp("students")
    teacher = save_teacher(tiny_teacher(seed=0, random_output=True), out / "teacher.safetensors")
    recipes = {name: train_student(name, teacher, out, steps=2, batch=3, batch32=1, seed=1, log=lambda m: None)
               for name in SHIPPED}
    return out, teacher, recipes


def test_recipes_and_checkpoints_are_recorded(trained):
    out, teacher, recipes = trained
    manifest = json.loads((out / "manifest.json").read_text())
    for name, rec in recipes.items():
        path = out / rec["file"]
        assert path.is_file() and rec["sha256"] == checkpoints.sha256(path)
        for key in ("seed", "steps", "batch", "batch32", "lr", "ema", "wall_seconds", "hardware", "options",
                    "budget", "teacher", "sampler", "history"):
            assert key in rec, (name, key)
        assert rec["steps"] == 2 and rec["batch"] == 3 and rec["seed"] == 1
        assert rec["teacher"]["sha256"] == checkpoints.sha256(teacher)
        assert json.loads((out / f"{path.stem}.recipe.json").read_text())["sha256"] == rec["sha256"]
        assert manifest["models"][name]["sha256"] == rec["sha256"]
        assert all(v for v in rec["history"][-1].values())  # a random teacher gives non-zero losses
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
            meta = f.metadata()
        assert dtypes == {torch.float16}
        assert json.loads(meta["family"]) == STUDENTS[name].family
    assert recipes["turbo"]["discriminator_parameters"] > 0


def test_training_moves_the_weights_from_the_teacher(trained):
    out, teacher, recipes = trained
    t_state, _ = checkpoints.load(teacher)
    for name in ("consistency", "lcm"):  # shipped raw (ema 0): two AdamW steps must show
        s_state, _ = checkpoints.load(out / recipes[name]["file"])
        diff = max(float((s_state[k] - t_state[k]).abs().max()) for k in t_state if k.startswith("unet."))
        assert diff > 1e-5, name


def test_time_budget_fixes_and_records_the_step_count(tmp_path):
    teacher = save_teacher(tiny_teacher(seed=0, random_output=True), tmp_path / "teacher.safetensors")
    rec = train_student("consistency", teacher, tmp_path, batch=2, max_seconds=0.3, log=lambda m: None)
    assert rec["budget"]["kind"] == "wall_time" and rec["max_seconds"] == 0.3
    # the recorded count is the count trained (the last history row is written at the final step)
    assert rec["steps"] >= 1 and rec["history"][-1]["step"] == rec["steps"]
    assert rec["budget"]["steps_x_batch"] == rec["steps"] * 2
    # with both a budget and --steps, the step count is an upper bound: a budget that never binds runs exactly it
    capped = train_student("consistency", teacher, tmp_path / "capped", steps=3, batch=2, max_seconds=3600,
                           log=lambda m: None)
    assert capped["steps"] == 3 and capped["history"][-1]["step"] == 3 and capped["budget"]["kind"] == "wall_time"


def test_recipe_overrides_merge_options():
    r = recipe_for("flowmap-meanflow", lr=1e-3, options={"p": 0.5})
    assert r.lr == 1e-3 and r.options["p"] == 0.5 and r.options["diag_frac"] == 0.5
    assert STUDENTS["flowmap-meanflow"].options["p"] == 1.0  # defaults untouched
    assert recipe_for("adversarial").model == "turbo" and recipe_for("flow_map").objective == "lmd"
    with pytest.raises(KeyError):
        recipe_for("nope")


@pytest.mark.parametrize("name", SHIPPED)
def test_adapter_samples_trained_checkpoint_with_honest_nfe(trained, name):
    out, _, recipes = trained
    sampler = ADAPTER[name](model=name, checkpoint=str(out / recipes[name]["file"]))
    assert sampler.info.family == STUDENTS[name].family and sampler.info.conditioning == "text"
    sampler.load(HardwareSpec.parse("cpu"))
    for nfe in (1, 2):
        req = SampleRequest(seeds=[5, 6, 7], nfe=nfe, height=16, width=16, prompts=PROMPTS)
        with NFECounter(sampler.networks()) as counter:
            img = sampler.sample(req)
        assert img.dtype == torch.uint8 and img.shape == (3, 3, 16, 16)
        assert counter.per_image(3) == nfe
        # image i depends on its seed only (initial and re-noise streams), not on the batch
        alone = sampler.sample(SampleRequest(seeds=[6], nfe=nfe, height=16, width=16, prompts=PROMPTS[1:2]))
        assert torch.equal(alone[0], img[1])
    big = sampler.sample(SampleRequest(seeds=[1], nfe=2, height=32, width=32, prompts=PROMPTS[:1]))
    assert big.shape == (1, 3, 32, 32)


def test_capabilities_are_declared_before_load(trained):
    out, _, recipes = trained
    hw = HardwareSpec.parse("cpu")
    cm = ZooConsistency(checkpoint=str(out / recipes["consistency"]["file"]))
    assert cm.info.nfe.describe() == "1..20"
    assert "NFE 32" in cm.info.unsupported(32, 16, hw)
    turbo = ZooAdversarial(checkpoint=str(out / recipes["turbo"]["file"]))
    assert turbo.info.nfe.values == frozenset({1, 2, 3, 4})  # trained on the trailing timesteps of 1..4 steps
    assert "NFE 8" in turbo.info.unsupported(8, 16, hw)
    assert ZooLCM(checkpoint=str(out / recipes["lcm"]["file"])).info.nfe.describe() == "1..50"
    fm = ZooFlowMap(checkpoint=str(out / recipes["flowmap-lmd"]["file"]))
    assert fm.info.unsupported(32, 16, hw) is None
    assert fm.info.unsupported(8, 8, hw) is not None  # resolutions declared: 16, 32
    assert fm.info.version != ZooFlowMap(checkpoint=str(out / recipes["flowmap-meanflow"]["file"])).info.version


def test_guidance_is_checked(trained):
    out, _, recipes = trained
    fm = ZooFlowMap(checkpoint=str(out / recipes["flowmap-lmd"]["file"]))
    fm.load(HardwareSpec.parse("cpu"))
    with pytest.raises(ValueError, match=r"distilled at guidance 1\.0"):
        fm.sample(SampleRequest(seeds=[0], nfe=1, height=16, width=16, prompts=PROMPTS[:1], guidance=2.0))
    lcm = ZooLCM(checkpoint=str(out / recipes["lcm"]["file"]))
    lcm.load(HardwareSpec.parse("cpu"))
    req = SampleRequest(seeds=[0], nfe=2, height=16, width=16, prompts=PROMPTS[:1])
    a = lcm.sample_float(req)
    b = lcm.sample_float(SampleRequest(**{**req.__dict__, "guidance": 3.0}))
    assert not torch.equal(a, b)  # w is an input of the network
    with pytest.raises(ValueError, match=r"guidance in \[1.0, 3.0\]"):
        lcm.sample(SampleRequest(**{**req.__dict__, "guidance": 5.0}))


def test_missing_weights_is_one_line_naming_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.ENV_VAR, str(tmp_path))
    for cls, name in ((ZooFlowMap, "flowmap-meanflow"), (ZooConsistency, "consistency"), (ZooLCM, "lcm"),
                      (ZooAdversarial, "turbo")):
        s = cls(model=name)
        assert s.info.version.endswith("noweights")
        with pytest.raises(MissingWeightsError) as e:
            s.load(HardwareSpec.parse("cpu"))
        msg = str(e.value)
        assert "\n" not in msg and checkpoints.weight_path(name).name in msg
        assert f"bench zoo train {name}" in msg
    with pytest.raises(MissingWeightsError, match="bench zoo train flowmap-lmd"):
        ZooFlowMap(checkpoint=str(tmp_path / "nope.safetensors")).load(HardwareSpec.parse("cpu"))


def test_shipped_name_lookup_and_family_mismatch(trained, monkeypatch):
    out, _, _ = trained
    monkeypatch.setenv(checkpoints.ENV_VAR, str(out))
    s = ZooFlowMap(model="flowmap-meanflow")  # found by name in BENCH_ZOO_WEIGHTS
    s.load(HardwareSpec.parse("cpu"))
    with pytest.raises(BenchError, match="'consistency' checkpoint"):
        ZooFlowMap(model="consistency").load(HardwareSpec.parse("cpu"))


def test_adapters_resolve_through_the_registry():
    for cls in ("ZooFlowMap", "ZooConsistency", "ZooLCM", "ZooAdversarial"):
        assert resolve_sampler(f"bench.adapters.students:{cls}").__name__ == cls


@pytest.mark.slow
def test_gpu_script_runs_tiny_on_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "DEVICE": "cpu", "STUDENT_STEPS": "1", "STUDENT_TINY": "1",
           "STUDENTS": "consistency", "BATCH": "2", "BATCH32": "0", "PYTHONPATH": str(ROOT),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "train_students_gpu.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (tmp_path / "consistency.safetensors").is_file() and (tmp_path / "consistency.log").is_file()
    assert json.loads((tmp_path / "consistency.recipe.json").read_text())["steps"] == 1
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "train_students_gpu.sh")], cwd=ROOT,
                         env={**env, "STUDENT_TINY": "0", "TEACHER": str(tmp_path / "none.safetensors")},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "teacher weights not found" in bad.stderr


def test_zoo_train_replays_the_recorded_recipe(trained, tmp_path, monkeypatch):
    out, _, recipes = trained
    monkeypatch.setenv(checkpoints.ENV_VAR, str(out))  # shipped teacher + manifest with the recorded recipes
    rec = zoo_train("consistency", tmp_path, "cpu", log=lambda m: None)
    assert (rec["steps"], rec["batch"], rec["batch32"], rec["seed"]) == (2, 3, 1, 1)
    assert rec["options"] == recipes["consistency"]["options"]
    assert rec["teacher"]["sha256"] == checkpoints.sha256(out / "teacher.safetensors")
    assert json.loads((tmp_path / "manifest.json").read_text())["models"]["consistency"]["sha256"] == rec["sha256"]


def test_acceptance_summary_reads_the_rules():
    from bench.zoo.students.evaluate import acceptance

    rows = [{"sampler": "teacher-euler", "nfe": n, "fd": fd} for n, fd in ((1, 10.0), (2, 6.0), (4, 3.0), (8, 2.0))]
    rows += [{"sampler": "teacher-heun", "nfe": 7, "fd": 1.2}]
    rows += [{"sampler": "flowmap-lmd", "nfe": n, "fd": fd} for n, fd in ((1, 4.0), (2, 2.5), (4, 1.6), (8, 1.5))]
    rows += [{"sampler": "consistency", "nfe": n, "fd": fd} for n, fd in ((1, 3.0), (2, 3.5))]
    s = acceptance({"fd_floor": 1.0, "rows": rows})
    fm = s["students"]["flowmap-lmd"]
    assert s["teacher_best"]["sampler"] == "teacher-heun"
    assert fm["monotone_1_to_8"] and fm["below_teacher_euler_at_1_2_4"] and fm["one_step_excess_below_half_euler1"]
    assert fm["excess4_le_1.5x_teacher_best"] is False  # 0.6 > 1.5 * 0.2
    assert s["students"]["consistency"]["degrades_with_more_steps"] is True


def test_students_start_as_the_teacher():
    """Initialised from the teacher (zero second-time embedding), the flow map is the teacher's Euler solver
    and a consistency / Turbo student's one step is the teacher's one Euler step: the time conventions agree."""
    from bench.zoo.students import models
    from bench.zoo.teacher import generate

    teacher = tiny_teacher(seed=3, random_output=True)
    with torch.no_grad():  # as a trained teacher: the second-time embedding is zero-initialised
        teacher.unet.s_embed[2].weight.zero_()
        teacher.unet.s_embed[2].bias.zero_()
    seeds, prompts = [4, 9], PROMPTS[:2]
    for cls, meta, nfe in ((ZooFlowMap, {"student": {"objective": "lmd"}}, 4),
                           (ZooConsistency, {"student": {"parameterisation": "rf", "grid": 20}}, 1),
                           (ZooAdversarial, {"student": {"timesteps": [999]}}, 1)):
        s = cls(checkpoint="/nonexistent.safetensors", **({} if cls is ZooFlowMap else {"clip_denoised": False}))
        s.use(models.copy_of(teacher), {"family": s.family, **meta})
        got = s.sample_float(SampleRequest(seeds=seeds, nfe=nfe, height=16, width=16, prompts=prompts))
        want = generate(teacher, prompts, seeds, nfe, "euler", resolution=16)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_time_capped_run_records_its_schedule_length_for_replay():
    """Stopped by the time cap at step 80 of a schedule fixed to 200: a replay of 80 steps must see the same lr."""
    from dataclasses import replace

    from bench.zoo.loop import lr_at
    from bench.zoo.students.train import REPLAY_KEYS

    fixed = recipe_for("consistency", steps=200)
    replay = replace(fixed, steps=80, schedule_steps=200)
    assert [lr_at(replay, k) for k in range(80)] == [lr_at(fixed, k) for k in range(80)]
    assert lr_at(replace(fixed, steps=80), 79) < lr_at(replay, 79)  # without it the cosine would end at step 80
    assert "schedule_steps" in REPLAY_KEYS
