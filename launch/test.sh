#!/usr/bin/env bash
# The README's test command (and what CI runs): set up .venv (first run only), run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
MEDSSL_EXTRAS=test,torch,tf source launch/setup_env.sh
echo "+ python -m ruff check ."
python -m ruff check .
echo "+ python -m pytest tests -n 2 $*"
exec python -m pytest tests -n 2 "$@"
