#!/bin/sh
# Re-measure everything reported in docs/craters.md (evaluation, sweep, benchmark) and rewrite its tables.
# Usage: sh scripts/craters_all.sh [WEIGHTS]   (default: the shipped weights). ~10 min on one CPU thread.
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
PY=${PYTHON:-python}
R=docs/craters_results
W=${1:+--weights $1}
mkdir -p $R
$PY scripts/eval_craters.py $W --json $R/eval.json
$PY scripts/eval_craters.py $W --tta --json $R/eval_tta.json
$PY scripts/eval_craters.py $W --template-thresh 0.4 --json $R/eval_t04.json
$PY scripts/eval_craters.py --baseline curvature --json $R/eval_baseline.json
$PY scripts/tune_craters.py $W --n 40 --json $R/tune.json
$PY scripts/bench_craters.py $W --threads 1 --repeats 3 --json $R/bench.json
$PY scripts/craters_docs.py
