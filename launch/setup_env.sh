# Sourced by demo.sh and test.sh: creates .venv with the package and the extras in MEDSSL_EXTRAS
# (default 'tf': TensorFlow for the tf.data pipeline; test.sh asks for 'test,torch,tf', torch being the
# weight-port tests' reference libraries) the first time (or when pyproject.toml or the extras
# changed), then activates it. Needs only Python 3.11+ and pip.
PYTHON="${PYTHON:-python3}"
EXTRAS="${MEDSSL_EXTRAS:-tf}"
# The torch extra is a CUDA build of PyTorch from PyPI (about 5.5 GB installed, with its NVIDIA
# libraries); on a disk with less room than that, install without it (the weight-port tests then
# skip, each saying why) rather than fail half-way through pip.
if [[ ",$EXTRAS," == *",torch,"* ]] && [ ! -f ".venv/.medssl-installed-${EXTRAS//,/-}" ]; then
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "${free_gb:-0}" -lt "${MEDSSL_TORCH_MIN_FREE_GB:-10}" ]; then
    EXTRAS=$(echo ",$EXTRAS," | sed 's/,torch,/,/; s/^,//; s/,$//')
    echo "note: only ${free_gb} GB free here; the torch extra needs about 10 GB, so .venv is set up without it" \
         "and the weight-port tests against PyTorch/timm will be skipped (free disk and delete .venv to include them)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  echo "+ $PYTHON -m venv .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.medssl-installed-${EXTRAS//,/-}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "+ .venv/bin/python -m pip install -e '.[${EXTRAS}]'  (first run: a few minutes)"
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".[${EXTRAS}]"; } >"$log" 2>&1; then
    tail -n 30 "$log"
    echo "error: installing the package into .venv failed; the full log is $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" TFDS_DISABLE_GCS=1 NO_GCE_CHECK=true
