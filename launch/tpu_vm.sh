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
readonly DEFAULT_VERSION="tpu-ubuntu2204-base"
# Folder (in the home directory of every TPU VM worker) the repo is copied or cloned into.
readonly REMOTE_DIR="medssl-jax"
# Log file of a training run on every worker.
readonly REMOTE_LOG="~/run.log"
readonly DEFAULT_TB_PORT="6006"

script_dir="$(cd "${BASH_SOURCE[0]%/*}" && pwd)"
readonly REPO_ROOT="${script_dir%/*}"

usage() {
  cat <<EOF
Usage: bash launch/tpu_vm.sh [--dry-run] SUBCOMMAND [options]

Subcommands:
  create       Create a TPU VM (or pod slice).
                 --name N --zone Z --type T [--project P] [--version V] [--spot|--preemptible]
  install      Copy (local path) or clone (git URL) the repo onto all workers, then pip install
               it with jax[tpu] on every worker.
                 --name N --zone Z [--project P] [--repo URL_or_local_path] [--branch B]
               --repo defaults to this checkout (${REPO_ROOT}); --branch only applies to a URL.
  run          Start training in the background on all workers (log: ${REMOTE_LOG}).
                 --name N --zone Z --config configs/x.py[:arg] --workdir DIR [--project P]
                 [--type T] [-- extra main.py args, e.g. --config.train.num_steps=100]
  logs         Follow the training log of one worker (default 0).
                 --name N --zone Z [--project P] [--worker 0]
  tensorboard  Run TensorBoard locally on a workdir (gs:// works too) and print its URL.
                 --workdir DIR [--port ${DEFAULT_TB_PORT}]
  delete       Delete the TPU VM.
                 --name N --zone Z [--project P]
  help         Print this message.

Global flags:
  --dry-run    Print the commands without running them (may appear anywhere).

Options take the form --opt VALUE or --opt=VALUE.

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
  bash launch/tpu_vm.sh delete --name my-tpu --zone us-central2-b
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
VERSION="${DEFAULT_VERSION}"
CAPACITY=""
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
          *) die "unknown option ${opt}. See: bash launch/tpu_vm.sh help" ;;
        esac
        ;;
      *)
        if [[ -n "${SUBCOMMAND}" ]]; then
          die "unexpected argument '${arg}' (subcommand already '${SUBCOMMAND}')." \
            "Put arguments for medssl_jax.main after '--'."
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
  require_gcloud
  common_flags
  local cmd=(gcloud compute tpus tpu-vm create "${NAME}" "${COMMON[@]}"
    "--accelerator-type=${TYPE}" "--version=${VERSION}")
  if [[ -n "${CAPACITY}" ]]; then
    cmd+=("${CAPACITY}")
  fi
  run_cmd "${cmd[@]}"
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
  run_cmd "${ssh[@]}" --command "cd ${REMOTE_DIR} && python3 -m pip install -e . 'jax[tpu]' -f ${LIBTPU_RELEASES_URL}"
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
  local main=(python3 -m medssl_jax.main --multihost "--config=${CONFIG}" "--workdir=${WORKDIR}")
  main+=("${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}")
  local remote
  remote="cd ${REMOTE_DIR} && nohup $(join_quoted "${main[@]}") > ${REMOTE_LOG} 2>&1 < /dev/null &"
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
  run_cmd gcloud compute tpus tpu-vm delete "${NAME}" "${COMMON[@]}" --quiet
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
