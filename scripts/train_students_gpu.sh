#!/usr/bin/env bash
# Train every embedded student from the shipped teacher on one GPU (equal wall-clock budget: about one minute
# each on an H100 / H200), then take a quick FD-per-NFE look at them. Everything lands under $OUT:
#   <file>.safetensors, <file>.recipe.json, <file>.log, manifest.json, env.txt, eval.json, eval.log
#
#   OUT=/some/dir bash scripts/train_students_gpu.sh        (or: bash scripts/train_students_gpu.sh DIR)
#
# Afterwards, on the development machine, copy the five <file>.safetensors into bench/zoo/weights/ and their
# manifest entries (or re-record them with bench.zoo.cli_impl once it knows the students).
#
# Environment (all optional):
#   OUT                  output folder (default $1, else runs/students-gpu)
#   DEVICE               torch device (default cuda)
#   SECONDS_PER_STUDENT  wall-clock budget per student (default 60)
#   STUDENTS             names to train (default: the shipped five)
#   TEACHER              teacher safetensors (default bench/zoo/weights/teacher.safetensors)
#   BATCH, BATCH32       images per step at 16x16 / 32x32 (default the GPU budget: 256 / 64)
#   STUDENT_STEPS        a fixed step count instead of the time budget (smoke tests: e.g. 2)
#   STUDENT_TINY=1       train from a tiny random teacher written to $OUT (tests the pipeline, not the models)
#   EVAL                 1: run bench.zoo.students.evaluate afterwards (default 1 when shapes-clip weights
#                        exist next to the teacher, else 0); EVAL_N samples per cell (default 1000)
# Exit status: 0 when every student trained (and the evaluation, if run, finished), 1 otherwise.
set -uo pipefail

OUT=${OUT:-${1:-runs/students-gpu}}
DEVICE=${DEVICE:-cuda}
SECONDS_PER_STUDENT=${SECONDS_PER_STUDENT:-60}
STUDENTS=${STUDENTS:-"flowmap-lmd flowmap-meanflow consistency lcm turbo"}
TEACHER=${TEACHER:-bench/zoo/weights/teacher.safetensors}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-.}
mkdir -p "$OUT"
# a bare device machine may lack some wheels: install the carried ones (as scripts/train_zoo_gpu.sh does)
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('safetensors', 'open_clip')))" \
    2>/dev/null && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi

{  # torch, CUDA and the GPU are also in every recipe's "hardware"
  date -u +%FT%TZ
  git rev-parse HEAD 2>/dev/null || echo "no git"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "${STUDENT_TINY:-0}" = "1" ]; then
  TEACHER="$OUT/teacher_tiny.safetensors"  # written by the first training run (--tiny-teacher)
  args=(--tiny-teacher)
elif [ ! -f "$TEACHER" ]; then
  echo "teacher weights not found: $TEACHER (run \`bench zoo train teacher\` or set TEACHER)" >&2
  exit 1
else
  args=()
fi

args+=(--teacher "$TEACHER" --out "$OUT" --device "$DEVICE")
if [ -n "${STUDENT_STEPS:-}" ]; then
  args+=(--steps "$STUDENT_STEPS")
else
  args+=(--max-seconds "$SECONDS_PER_STUDENT")
fi
[ -n "${BATCH:-}" ] && args+=(--batch "$BATCH")
[ -n "${BATCH32:-}" ] && args+=(--batch32 "$BATCH32")

failed=()
for s in $STUDENTS; do
  echo "=== $s ($(date -u +%T))"
  # one process per student: a crash or NaN run loses only that student
  if ! "$PY" -m bench.zoo.students.train "$s" "${args[@]}"; then
    echo "=== $s FAILED" >&2
    failed+=("$s")
  fi
done

clip_file="$(dirname "$TEACHER")/shapes_clip.safetensors"
EVAL=${EVAL:-$([ -f "$clip_file" ] && [ "${STUDENT_TINY:-0}" != "1" ] && echo 1 || echo 0)}
if [ "$EVAL" = "1" ]; then
  echo "=== eval ($(date -u +%T))"
  if ! "$PY" -m bench.zoo.students.evaluate --weights "$OUT" --teacher "$TEACHER" --clip "$clip_file" \
      --device "$DEVICE" --n "${EVAL_N:-1000}" --students $STUDENTS 2>&1 | tee "$OUT/eval.log"; then
    failed+=("eval")
  fi
fi

ls -l "$OUT"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all students trained: $STUDENTS"
