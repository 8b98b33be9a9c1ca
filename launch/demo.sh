#!/usr/bin/env bash
# The README's main command: set up .venv (first run only), then SimCLR-pretrain on the
# embedded synthetic data and linear-probe the features. Extra args go to `medssl-jax train`.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/setup_env.sh
workdir="${WORKDIR:-workdirs/demo}"
echo "+ medssl-jax train --config=configs/demo.py --workdir=$workdir $*"
exec medssl-jax train --config=configs/demo.py --workdir="$workdir" "$@"
