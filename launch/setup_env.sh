# Sourced by demo.sh and test.sh: creates .venv with the package and the extras in MEDSSL_EXTRAS
# (default 'test'; test.sh adds 'torch', the weight-port tests' reference libraries) the first time
# (or when setup.py or the extras changed), then activates it. Needs only Python 3.11+ and pip.
PYTHON="${PYTHON:-python3}"
EXTRAS="${MEDSSL_EXTRAS:-test}"
if [ ! -x .venv/bin/python ]; then
  echo "+ $PYTHON -m venv .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.medssl-installed-${EXTRAS//,/-}"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
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
