#!/usr/bin/env bash
# Builds genmodels against the torch already installed, runs the whole test suite and
# every benchmark, and writes under benchmarks/results/:
#   TAG.json (pytest-benchmark, with GPU/CPU, torch, CUDA and Triton versions),
#   TAG.md (the summary table) and TAG-tests.txt (the test log).
# TAG defaults to the device name. Usage: bash benchmarks/run_all.sh [TAG] [pytest -k EXPR]
# On a GPU machine run it without TRITON_INTERPRET. Copies the results to $OUT when set.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
tag=${1:-$("$python" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-') if torch.cuda.is_available() else 'cpu')")}
select=${2:-}
results=benchmarks/results
mkdir -p "$results"
export PYTHONUNBUFFERED=1

"$python" -m pip install --quiet --no-build-isolation -e . || exit 1
"$python" -m genmodels backends

"$python" -m pytest -q -ra tests 2>&1 | tee "$results/$tag-tests.txt"
test_status=${PIPESTATUS[0]}

"$python" -m pytest -q benchmarks ${select:+-k "$select"} \
  --benchmark-json="$results/$tag.json" --benchmark-min-rounds=5 --benchmark-max-time=0.5
bench_status=$?
"$python" benchmarks/report.py "$results/$tag.json" | tee "$results/$tag.md"

if [ -n "${OUT:-}" ]; then
  cp "$results/$tag.json" "$results/$tag.md" "$results/$tag-tests.txt" "$OUT/"
fi
exit $(( test_status || bench_status ))
