#!/usr/bin/env bash
# Create, set up, run on, watch and delete a Cloud TPU VM (single host or pod slice) for
# medssl-jax. Every gcloud command is printed (prefix "+ ") before it runs; --dry-run prints
# without running. Run `bash launch/tpu_vm.sh help` for usage with worked examples.
#
# Only bash built-ins are used before gcloud is looked up, so a missing gcloud is reported
# clearly instead of failing on something else first.
set -euo pipefail

# ---- constants ----------------------------------------------------------------------------
# The documented JAX TPU install line: pip install 'jax[tpu]' -f <this URL>.
readonly LIBTPU_RELEASES_URL="https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# Python of the environment made on every worker. The TPU VM images ship Python 3.10 (Ubuntu
# 22.04), older than medssl-jax and current JAX accept (>= 3.11), so `install` puts uv in the
# user's site-packages (`pip install --user uv`) and lets it fetch a standalone CPython.
readonly DEFAULT_PYTHON_VERSION="3.12"
# The environment (on every worker, in the home directory) and its interpreter.
readonly REMOTE_VENV="~/medssl-venv"
readonly REMOTE_PYTHON="${REMOTE_VENV}/bin/python"
# Scopes given with --service-account when --scopes is not: access is then what the account's
# IAM roles allow (e.g. roles/storage.objectAdmin on the bucket).
readonly DEFAULT_SCOPES="https://www.googleapis.com/auth/cloud-platform"
# Seconds between copies of every worker's log into <workdir>/logs/ while a run goes on.
readonly LOG_SYNC_SECONDS="60"
# Folder (in the home directory of every TPU VM worker) the repo is copied or cloned into.
readonly REMOTE_DIR="medssl-jax"
# Log file of a training run on every worker (also copied to <workdir>/logs/<hostname>.log).
readonly REMOTE_LOG="~/run.log"
readonly DEFAULT_TB_PORT="6006"

script_dir="$(cd "${BASH_SOURCE[0]%/*}" && pwd)"
readonly REPO_ROOT="${script_dir%/*}"

usage() {
  cat <<EOF
Usage: bash launch/tpu_vm.sh [--dry-run] SUBCOMMAND [options]

Subcommands:
  create       Create a TPU VM (or pod slice).
                 --name N --zone Z --type T [--project P] [--version V]
                 [--spot | --queued | --preemptible] [--service-account SA [--scopes S]]
               --version defaults to the runtime of the accelerator family (see below).
               --spot requests Spot capacity through a queued resource (gcloud compute tpus
               queued-resources create ... --spot; the TPU VM appears when capacity is
               granted); --queued does the same for on-demand capacity.
  install      Copy (local path) or clone (git URL) the repo onto all workers, make a Python
               environment ${REMOTE_VENV} (uv, Python ${DEFAULT_PYTHON_VERSION}) on each, and pip install
               the repo with jax[tpu] into it.
                 --name N --zone Z [--project P] [--repo URL_or_local_path] [--branch B]
                 [--python-version ${DEFAULT_PYTHON_VERSION}]
               --repo defaults to this checkout (${REPO_ROOT}); --branch only applies to a URL.
  run          Start training in the background on all workers with ${REMOTE_PYTHON}
               (log: ${REMOTE_LOG} on each worker, copied every ${LOG_SYNC_SECONDS} s and at the end to
               <workdir>/logs/<worker hostname>.log).
                 --name N --zone Z --config configs/x.py[:arg] --workdir DIR [--project P]
                 [--type T] [-- extra main.py args, e.g. --config.train.num_steps=100]
  logs         Follow the training log of one worker (default 0).
                 --name N --zone Z [--project P] [--worker 0]
  tensorboard  Run TensorBoard locally on a workdir (gs:// works too) and print its URL.
                 --workdir DIR [--port ${DEFAULT_TB_PORT}]
  delete       Delete the TPU VM; with --spot or --queued, its queued resource (and the VM).
                 --name N --zone Z [--project P] [--spot | --queued]
  help         Print this message.

Global flags:
  --dry-run    Print the commands without running them (may appear anywhere).

Options take the form --opt VALUE or --opt=VALUE.

Runtime version (--version) by accelerator type, when not given:
  v2-*, v3-*, v4-*        tpu-ubuntu2204-base
  v5litepod-*, v5e-*      v2-alpha-tpuv5-lite
  v5p-*                   v2-alpha-tpuv5
  v6e-*                   v2-alpha-tpuv6e

Multi-host pod slices (e.g. v4-16 and larger, v5litepod-16 and larger) run one process per
host, and every host must see the same workdir: use a GCS path (gs://bucket/dir). A local
path would give each host its own, incomplete copy of checkpoints and summaries.

Worked example (a v4-32 pod slice, 4 hosts):
  bash launch/tpu_vm.sh create --name my-tpu --zone us-central2-b --type v4-32 --spot
  bash launch/tpu_vm.sh install --name my-tpu --zone us-central2-b
  bash launch/tpu_vm.sh install --name my-tpu --zone us-central2-b \\
      --repo https://github.com/ORG/medssl-jax.git --branch main
  bash launch/tpu_vm.sh run --name my-tpu --zone us-central2-b \\
      --config configs/base.py --workdir gs://my-bucket/medssl/run1 \\
      -- --config.train.num_steps=1000
  bash launch/tpu_vm.sh logs --name my-tpu --zone us-central2-b --worker 0
  bash launch/tpu_vm.sh tensorboard --workdir gs://my-bucket/medssl/run1 --port 6006
  bash launch/tpu_vm.sh delete --name my-tpu --zone us-central2-b --spot
  bash launch/tpu_vm.sh --dry-run run --name my-tpu --zone us-central2-b \\
      --config configs/base.py --workdir gs://my-bucket/medssl/run2
EOF
}

die() {
  echo "tpu_vm.sh: error: $*" >&2
  exit 2
}

warn() {
  echo "tpu_vm.sh: warning: $*" >&2
}

# Quotes one word for a POSIX shell; words made of safe characters are left as they are.
shell_quote() {
  local s="$1"
  if [[ -n "${s}" && "${s}" =~ ^[A-Za-z0-9_./:=@%+,~^-]+$ ]]; then
    printf '%s' "${s}"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# Joins words into one shell command line, quoting each as needed.
join_quoted() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(shell_quote "${word}")"
  done
  printf '%s' "${out}"
}

DRY_RUN=0

# Prints a command ("+ " prefix), then runs it unless --dry-run was given.
run_cmd() {
  echo "+ $(join_quoted "$@")"
  if [[ "${DRY_RUN}" -eq 0 ]]; then
    "$@"
  fi
}

require_gcloud() {
  if ! command -v gcloud >/dev/null 2>&1; then
    die "gcloud not found on PATH. Install the Google Cloud SDK" \
      "(https://cloud.google.com/sdk/docs/install), run 'gcloud auth login', and try again."
  fi
}

# require VALUE OPTION SUBCOMMAND EXAMPLE
require() {
  if [[ -z "$1" ]]; then
    die "'$3' needs $2 (e.g. $2 $4). See: bash launch/tpu_vm.sh help"
  fi
}

# The Cloud TPU runtime (software) version for an accelerator type, by family.
runtime_version() {
  case "$1" in
    v2-* | v3-* | v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) return 1 ;;
  esac
}

# Pod slices whose size suffix is above 8 span several hosts (v2/v3/v4/v5p count TensorCores
# with 8 per host; v5litepod/v6e count chips with up to 8 per host).
is_multi_host_type() {
  local size="${1##*-}"
  [[ "${size}" =~ ^[0-9]+$ ]] && ((size > 8))
}

# ---- argument parsing ---------------------------------------------------------------------
SUBCOMMAND=""
NAME=""
ZONE=""
TYPE=""
PROJECT=""
VERSION=""
CAPACITY=""
QUEUED=0
SERVICE_ACCOUNT=""
SCOPES=""
PYTHON_VERSION="${DEFAULT_PYTHON_VERSION}"
REPO=""
BRANCH=""
CONFIG=""
WORKDIR=""
WORKER="0"
PORT="${DEFAULT_TB_PORT}"
EXTRA_ARGS=()

parse_args() {
  local arg opt value
  while (($# > 0)); do
    arg="$1"
    shift
    case "${arg}" in
      --)
        EXTRA_ARGS=("$@")
        return
        ;;
      --dry-run) DRY_RUN=1 ;;
      -h | --help | help)
        SUBCOMMAND="help"
        ;;
      --spot | --preemptible)
        if [[ -n "${CAPACITY}" && "${CAPACITY}" != "${arg}" ]]; then
          die "--spot and --preemptible are mutually exclusive"
        fi
        CAPACITY="${arg}"
        ;;
      --queued) QUEUED=1 ;;
      --*)
        if [[ "${arg}" == *=* ]]; then
          opt="${arg%%=*}"
          value="${arg#*=}"
        else
          opt="${arg}"
          if (($# == 0)); then
            die "${opt} needs a value"
          fi
          value="$1"
          shift
        fi
        case "${opt}" in
          --name) NAME="${value}" ;;
          --zone) ZONE="${value}" ;;
          --type | --accelerator-type) TYPE="${value}" ;;
          --project) PROJECT="${value}" ;;
          --version) VERSION="${value}" ;;
          --repo) REPO="${value}" ;;
          --branch) BRANCH="${value}" ;;
          --config) CONFIG="${value}" ;;
          --workdir) WORKDIR="${value}" ;;
          --worker) WORKER="${value}" ;;
          --port) PORT="${value}" ;;
          --service-account) SERVICE_ACCOUNT="${value}" ;;
          --scopes) SCOPES="${value}" ;;
          --python-version) PYTHON_VERSION="${value}" ;;
          *) die "unknown option ${opt}. See: bash launch/tpu_vm.sh help" ;;
        esac
        ;;
      *)
        if [[ -n "${SUBCOMMAND}" ]]; then
          die "unexpected argument '${arg}' (subcommand already '${SUBCOMMAND}')." \
            "Put arguments for 'medssl-jax train' after '--'."
        fi
        SUBCOMMAND="${arg}"
        ;;
    esac
  done
}

# Flags shared by every `gcloud compute tpus tpu-vm` call: --zone and, if given, --project.
common_flags() {
  COMMON=("--zone=${ZONE}")
  if [[ -n "${PROJECT}" ]]; then
    COMMON+=("--project=${PROJECT}")
  fi
}

# ---- subcommands --------------------------------------------------------------------------
cmd_create() {
  require "${NAME}" --name create my-tpu
  require "${ZONE}" --zone create us-central2-b
  require "${TYPE}" --type create v4-32
  local version="${VERSION}"
  if [[ -z "${version}" ]]; then
    version="$(runtime_version "${TYPE}")" ||
      die "no known runtime version for --type ${TYPE}; give one with --version" \
        "(list them: gcloud compute tpus tpu-vm versions list --zone ${ZONE})"
  fi
  if [[ -n "${SCOPES}" && -z "${SERVICE_ACCOUNT}" ]]; then
    die "--scopes applies to --service-account; give the account too"
  fi
  if [[ "${CAPACITY}" == "--preemptible" && "${QUEUED}" -eq 1 ]]; then
    die "--preemptible is a TPU VM option; a queued resource takes --spot instead"
  fi
  require_gcloud
  common_flags
  local access=()
  if [[ -n "${SERVICE_ACCOUNT}" ]]; then
    access=("--service-account=${SERVICE_ACCOUNT}" "--scopes=${SCOPES:-${DEFAULT_SCOPES}}")
  fi
  local cmd
  if [[ "${CAPACITY}" == "--spot" || "${QUEUED}" -eq 1 ]]; then
    # A queued resource named like the node: the TPU VM (node) appears when capacity is granted.
    cmd=(gcloud compute tpus queued-resources create "${NAME}" "--node-id=${NAME}" "${COMMON[@]}"
      "--accelerator-type=${TYPE}" "--runtime-version=${version}")
  else
    cmd=(gcloud compute tpus tpu-vm create "${NAME}" "${COMMON[@]}"
      "--accelerator-type=${TYPE}" "--version=${version}")
  fi
  if [[ -n "${CAPACITY}" ]]; then
    cmd+=("${CAPACITY}")
  fi
  cmd+=("${access[@]+"${access[@]}"}")
  run_cmd "${cmd[@]}"
  if [[ "${CAPACITY}" == "--spot" || "${QUEUED}" -eq 1 ]]; then
    echo "Queued. The TPU VM exists once the request is ACTIVE; check with:"
    echo "  gcloud compute tpus queued-resources describe ${NAME} $(join_quoted "${COMMON[@]}")"
  fi
}

cmd_install() {
  require "${NAME}" --name install my-tpu
  require "${ZONE}" --zone install us-central2-b
  local repo="${REPO:-${REPO_ROOT}}"
  require_gcloud
  common_flags
  local ssh=(gcloud compute tpus tpu-vm ssh "${NAME}" "${COMMON[@]}" --worker=all)
  if [[ -d "${repo}" ]]; then
    if [[ -n "${BRANCH}" ]]; then
      die "--branch only applies to a git URL; '${repo}' is a local folder (copied as it is)"
    fi
    [[ -f "${repo}/setup.py" ]] || die "'${repo}' has no setup.py; is it a medssl-jax checkout?"
    # Pack the working tree (uncommitted changes included, caches and environments left out)
    # and copy the archive to every worker.
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand ${tmp} now.
    trap "rm -rf '${tmp}'" EXIT
    local archive="${tmp}/${REMOTE_DIR}.tar.gz"
    run_cmd tar -czf "${archive}" --exclude=.git --exclude=.venv --exclude=venv \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache \
      --exclude=workdirs --exclude=build --exclude=.whl -C "${repo}" .
    run_cmd gcloud compute tpus tpu-vm scp "${archive}" "${NAME}:~/" "${COMMON[@]}" --worker=all
    run_cmd "${ssh[@]}" --command "rm -rf ${REMOTE_DIR} && mkdir -p ${REMOTE_DIR} && tar -xzf ${REMOTE_DIR}.tar.gz -C ${REMOTE_DIR} && rm ${REMOTE_DIR}.tar.gz"
  elif [[ "${repo}" == *://* || "${repo}" == git@* || "${repo}" == *.git ]]; then
    local clone=(git clone)
    if [[ -n "${BRANCH}" ]]; then
      clone+=(--branch "${BRANCH}")
    fi
    clone+=("${repo}" "${REMOTE_DIR}")
    run_cmd "${ssh[@]}" --command "rm -rf ${REMOTE_DIR} && $(join_quoted "${clone[@]}")"
  else
    die "--repo '${repo}' is neither a local folder nor a git URL"
  fi
  # The system python3 is 3.10 on the TPU VM images: a Python ${PYTHON_VERSION} environment from uv.
  run_cmd "${ssh[@]}" --command "python3 -m pip install --user --upgrade uv && rm -rf ${REMOTE_VENV} && ~/.local/bin/uv venv --seed --python $(shell_quote "${PYTHON_VERSION}") ${REMOTE_VENV}"
  run_cmd "${ssh[@]}" --command "cd ${REMOTE_DIR} && ${REMOTE_PYTHON} -m pip install -e . 'jax[tpu]' -f ${LIBTPU_RELEASES_URL}"
}

cmd_run() {
  require "${NAME}" --name run my-tpu
  require "${ZONE}" --zone run us-central2-b
  require "${CONFIG}" --config run configs/base.py
  require "${WORKDIR}" --workdir run gs://my-bucket/medssl/run1
  if [[ "${WORKDIR}" != gs://* ]]; then
    if [[ -n "${TYPE}" ]] && is_multi_host_type "${TYPE}"; then
      warn "${TYPE} is a multi-host slice but --workdir '${WORKDIR}' is a local path: every" \
        "host needs the same workdir, use gs://bucket/dir."
    elif [[ -z "${TYPE}" ]]; then
      warn "--workdir '${WORKDIR}' is not on GCS; that only works on a single-host TPU VM." \
        "Multi-host slices need a workdir every host can see (gs://bucket/dir)."
    fi
  fi
  require_gcloud
  common_flags
  local main=("${REMOTE_PYTHON}" -m medssl_jax train --multihost "--config=${CONFIG}" "--workdir=${WORKDIR}")
  main+=("${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}")
  # On each worker: train with the log in ${REMOTE_LOG}, and copy that log to
  # <workdir>/logs/<hostname>.log every ${LOG_SYNC_SECONDS} s and when training ends (so the logs of
  # every worker outlive a deleted or preempted VM when the workdir is on GCS).
  local dst copy script remote
  dst="$(shell_quote "${WORKDIR%/}/logs")/\$(hostname).log"
  if [[ "${WORKDIR}" == gs://* ]]; then
    copy="gcloud storage cp ${REMOTE_LOG} ${dst} > /dev/null 2>&1"
  else
    copy="mkdir -p $(shell_quote "${WORKDIR%/}/logs") && cp ${REMOTE_LOG} ${dst}"
  fi
  script="copy_log() { ${copy} || true; }; (while sleep ${LOG_SYNC_SECONDS}; do copy_log; done) & syncer=\$!;"
  script+=" $(join_quoted "${main[@]}") > ${REMOTE_LOG} 2>&1; code=\$?; kill \$syncer; copy_log; exit \$code"
  remote="cd ${REMOTE_DIR} && nohup bash -c $(shell_quote "${script}") > /dev/null 2>&1 < /dev/null &"
  run_cmd gcloud compute tpus tpu-vm ssh "${NAME}" "${COMMON[@]}" --worker=all --command "${remote}"
  echo "Started on all workers. Follow with: bash launch/tpu_vm.sh logs --name ${NAME} --zone ${ZONE}${PROJECT:+ --project ${PROJECT}}"
}

cmd_logs() {
  require "${NAME}" --name logs my-tpu
  require "${ZONE}" --zone logs us-central2-b
  require_gcloud
  common_flags
  run_cmd gcloud compute tpus tpu-vm ssh "${NAME}" "${COMMON[@]}" "--worker=${WORKER}" \
    --command "tail -f ${REMOTE_LOG}"
}

cmd_tensorboard() {
  require "${WORKDIR}" --workdir tensorboard gs://my-bucket/medssl/run1
  if [[ "${DRY_RUN}" -eq 0 ]] && ! command -v tensorboard >/dev/null 2>&1; then
    die "tensorboard not found on PATH; install it with: python3 -m pip install tensorboard"
  fi
  echo "TensorBoard: http://localhost:${PORT}/"
  run_cmd tensorboard --logdir "${WORKDIR}" --port "${PORT}"
}

cmd_delete() {
  require "${NAME}" --name delete my-tpu
  require "${ZONE}" --zone delete us-central2-b
  require_gcloud
  common_flags
  if [[ "${CAPACITY}" == "--spot" || "${QUEUED}" -eq 1 ]]; then
    # --force deletes the queued resource's TPU VM first, then the request.
    run_cmd gcloud compute tpus queued-resources delete "${NAME}" "${COMMON[@]}" --force --quiet
  else
    run_cmd gcloud compute tpus tpu-vm delete "${NAME}" "${COMMON[@]}" --quiet
  fi
}

main() {
  parse_args "$@"
  if ((${#EXTRA_ARGS[@]} > 0)) && [[ "${SUBCOMMAND}" != "run" ]]; then
    die "arguments after '--' are only accepted by 'run'"
  fi
  case "${SUBCOMMAND}" in
    create) cmd_create ;;
    install) cmd_install ;;
    run) cmd_run ;;
    logs) cmd_logs ;;
    tensorboard) cmd_tensorboard ;;
    delete) cmd_delete ;;
    help) usage ;;
    "")
      usage >&2
      die "no subcommand given"
      ;;
    *) die "unknown subcommand '${SUBCOMMAND}'. See: bash launch/tpu_vm.sh help" ;;
  esac
}

main "$@"
