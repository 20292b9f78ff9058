#!/usr/bin/env bash
# On a machine with a CUDA GPU, in about 6 minutes: the CUDA tests, a short default training on
# the GPU, the float64 gradient check on CUDA and the benchmark; then a summary, one line a step.
#
#     scripts/gpu_check.sh            (PYTHON=... to use another interpreter than .venv/bin/python,
#                                      GPU_CHECK_LOGS=DIR to keep the logs and benchmark.json in DIR)
#
# Each step has its own time limit; the script's exit code is the number of steps that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG=${GPU_CHECK_LOGS:-$(mktemp -d)}
mkdir -p "$LOG"
summary=()
failed=0

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "=== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$LOG/$name.log" | tail -25
    local rc=${PIPESTATUS[0]}
    local verdict=PASS
    [ "$rc" -eq 0 ] || { verdict="FAIL (exit $rc)"; failed=$((failed + 1)); }
    summary+=("$(printf '%-10s %-16s %4ds' "$name" "$verdict" $((SECONDS - start)))")
}

echo "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device:',
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE (the CUDA steps will fail or skip)')"

step tests 150 "$PY" -m pytest -q -p no:cacheprovider -rs -n 4 -k cuda tests
RUN=$(mktemp -d)
step train 60 bash -c "cd '$RUN' && '$PY' -m mlp_torch.cli fit --trainer.accelerator gpu --trainer.devices 1 \
    --trainer.max_epochs 30 --trainer.enable_progress_bar false"
step gradcheck 45 "$PY" -m mlp_torch.cli gradcheck --device cuda --dtype float64 --sizes "[64, 100, 10]" \
    --cost cross_entropy --l1 1e-4 --l2 1e-4 --batch_size 32
BENCH=scripts/benchmark.py
[ -f "$BENCH" ] || BENCH=scripts/bench.py
step benchmark 300 "$PY" "$BENCH" --rounds 2 --out "$LOG/benchmark.json"

echo
echo "=== summary (logs in $LOG)"
printf '%s\n' "${summary[@]}"
grep -h "passed\|failed\|skipped" "$LOG/tests.log" | tail -1
grep -h "test/acc\|wall time" "$LOG/train.log"
grep -h "PASS\|FAIL" "$LOG/gradcheck.log" | tail -1
exit "$failed"
