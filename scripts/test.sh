#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 MPLBACKEND=Agg
python -m pytest -q "$@"
