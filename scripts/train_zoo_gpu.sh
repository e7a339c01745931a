#!/usr/bin/env bash
# Train the embedded zoo (shapes-clip, then the teacher) on one GPU and evaluate the teacher.
# Outputs (fp16 safetensors, recipes, eval.json, train.log) go to $OUT (device tool) or $1.
#   CLIP_SECONDS / TEACHER_SECONDS: wall-time budgets (the step count is fixed after timing the first
#   steps and recorded in the recipe); CLIP_ARGS / TEACHER_ARGS / EVAL_ARGS: extra flags for
#   `python -m bench.zoo.train` (e.g. "--steps 5 --batch 16" for a CPU smoke test).
# Afterwards, on the development machine: python -m bench.zoo.cli_impl install <that folder>
# The shipped stage 1 came from: bash scripts/train_zoo_gpu.sh  (defaults below; NVIDIA H200, device tool,
# with .whl/ carrying open_clip_torch 3.3.0, ftfy 6.3.1 and wcwidth 0.9.4, which that image lacks).
# Stage 2 of the teacher: python3 -m bench.zoo.train teacher --init bench/zoo/weights/teacher.safetensors \
#   --out "$OUT" --seed 1 --batch 2048 --batch32 512 --lr 4e-4 --warmup 100 --max-seconds 135
set -uo pipefail
OUT=${OUT:-${1:-runs/zoo-gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
if ! python3 -c "import open_clip" 2>/dev/null && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:.
fi
python3 -c "import sys, torch, open_clip, safetensors; print(sys.version.split()[0], torch.__version__, open_clip.__version__, 'cuda', torch.cuda.is_available())" || exit 3
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m bench.zoo.train shapes-clip --out "$OUT" --max-seconds "${CLIP_SECONDS:-60}" ${CLIP_ARGS:-} || exit 4
python3 -m bench.zoo.train teacher --out "$OUT" --max-seconds "${TEACHER_SECONDS:-290}" ${TEACHER_ARGS:-} || exit 5
python3 -m bench.zoo.train eval --out "$OUT" --n "${EVAL_N:-2000}" ${EVAL_ARGS:-} || exit 6
ls -la "$OUT"
