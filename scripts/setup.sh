#!/usr/bin/env bash
# Create .venv and install lunarmap with the CPU build of torch (constraints.txt) and test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt -e '.[test]'
python - <<'PY'
import importlib.metadata as md
bad = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"] and d.metadata["Name"].lower().startswith(("nvidia-", "triton"))]
assert not bad, f"CUDA packages were installed: {bad}; use -c constraints.txt"
import lunarmap, torch
print(f"lunarmap {lunarmap.__version__} installed (torch {torch.__version__})")
PY
