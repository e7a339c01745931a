#!/usr/bin/env bash
# The GPU check, one script for a lent GPU machine (device tool) or any CUDA box; every stage has its own time
# limit so one slow stage cannot lose the others, and everything lands under $OUT:
#   1. tiny_diffusers' cuda cells (every diffusers adapter: CUDA-synchronised latency, max_memory_allocated)
#   2. nfe_sweep's cuda cells (embedded teacher + students, quality metrics on the GPU too)
#   3. float16 cells (scripts/gpu_check.yaml: the determinism probe's fp16 max |alone - in batch|)
#   4. eager vs torch.compile (scripts/gpu_check_compile.yaml)
#   5. GPU-busy fraction while sampling (scripts/gpu_busy.py), nvidia-smi dmon beside stages 1-4
#   6. STAGES=students (or "cells students"): retrain the five students with 32 px batches
#      (scripts/train_students_gpu.sh, SECONDS_PER_STUDENT each, then its quick FD check)
# Outputs: log.txt, cells.tar.gz (the stores + evidence), busy.json, dmon.txt, summary.txt, students.tar.gz.
# Read them back with: python scripts/gpu_summary.py DIR  (prints the tables docs/real-models.md records).
#   OUT=/some/dir bash scripts/gpu_check.sh
# Env: STAGES (default "cells"), T_TINY T_NFE T_FP16 T_COMPILE T_BUSY T_TRAIN (seconds per stage), SECONDS_PER_STUDENT, HW (default cuda).
set -uo pipefail
OUT=${OUT:-${1:-runs/gpu-check}}
HW=${HW:-cuda}
W=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
# a bare device machine lacks some wheels: install the carried ones (pydantic, diffusers, torch-fidelity, ...)
if ! python3 -c "import pydantic, diffusers, torch_fidelity, cleanfid, open_clip" 2>/dev/null && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-} BENCH_TINY_DIR=$W/tiny HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
BENCH="python3 -m bench"
stage() { echo "=== $1 ($(date -u +%T))"; }
python3 -c "import sys, torch, pydantic, diffusers, bench; print(sys.version.split()[0], 'torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())" || exit 3
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
git rev-parse HEAD 2>/dev/null
if command -v nvidia-smi >/dev/null; then nvidia-smi dmon -s u -d 1 -o T > "$OUT/dmon.txt" 2>&1 & DMON=$!; else DMON=; fi

STAGES=${STAGES:-cells}
if [[ " $STAGES " == *" cells "* ]]; then
stage "tiny_diffusers $HW"
timeout "${T_TINY:-60}" $BENCH run suites/tiny_diffusers.yaml --set "axes.hardware=[$HW]" --store "$W/tiny.sqlite" --no-progress --set report.enabled=false
stage "nfe_sweep $HW"
timeout "${T_NFE:-200}" $BENCH run suites/nfe_sweep.yaml --set "axes.hardware=[$HW]" --store "$W/nfe.sqlite" --no-progress --set report.enabled=false
stage "float16"
timeout "${T_FP16:-40}" $BENCH run scripts/gpu_check.yaml --set "axes.hardware=[\"$HW:dtype=float16\"]" --store "$W/fp16.sqlite" --no-progress
stage "compile"
timeout "${T_COMPILE:-60}" $BENCH run scripts/gpu_check_compile.yaml --set "axes.hardware=[$HW, \"$HW:compile=true\"]" --store "$W/compile.sqlite" --no-progress
[ -n "$DMON" ] && kill "$DMON" 2>/dev/null
stage "busy"
timeout "${T_BUSY:-35}" python3 scripts/gpu_busy.py --hardware "$HW" --out "$OUT/busy.json"
for s in tiny nfe fp16 compile; do
  [ -f "$W/$s.sqlite" ] && $BENCH export --store "$W/$s.sqlite" --format csv -o "$W/$s.csv"
done
tar -C "$W" -czf "$OUT/cells.tar.gz" --exclude tiny . 2>/dev/null
ls -la "$OUT"
fi

if [[ " $STAGES " == *" students "* ]]; then
  stage "students"
  SECONDS_PER_STUDENT=${SECONDS_PER_STUDENT:-45} EVAL_N=${EVAL_N:-1000} OUT=$W/students PYTHON=python3 \
    timeout "${T_TRAIN:-290}" bash scripts/train_students_gpu.sh
  tar -C "$W" -czf "$OUT/students.tar.gz" students
  cp "$W/students/eval.log" "$OUT/" 2>/dev/null
fi
stage "done"
ls -la "$OUT"
