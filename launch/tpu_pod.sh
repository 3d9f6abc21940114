#!/usr/bin/env bash
# Trains with `python -m gtalign.main` on a Cloud TPU VM slice (e.g. v5e `v5litepod-16`, v5p
# `v5p-16`): creates the TPU VM or reuses it, ships the code to every worker, installs it, and
# starts the same command on all workers at once.
#
# Usage:
#   TPU_NAME=NAME ZONE=ZONE [VAR=value ...] launch/tpu_pod.sh [--dry-run] [-h|--help] [--]
#       [MAIN_ARGS ...]
#
#   --dry-run   print the commands, one per line, and run nothing (lines starting with `#` are
#               comments; every other line is a command)
#   -h, --help  print this help
#   MAIN_ARGS   everything after `--`, and every argument not recognised above, is passed on to
#               gtalign.main, e.g. `-- --config.rl.steps=100`
#
# Steps (GCLOUD = gcloud compute tpus tpu-vm, FLAGS = --zone=$ZONE [--project=$PROJECT]):
#   1. GCLOUD describe $TPU_NAME FLAGS; when that fails, GCLOUD create $TPU_NAME FLAGS
#      --accelerator-type=$ACCELERATOR_TYPE --version=$RUNTIME_VERSION [--spot]
#   2. CODE=copy: `git archive` the checkout's tracked files into a tarball (uncommitted changes
#      included, via `git stash create`, which only writes an unreferenced commit; new files
#      need `git add`), GCLOUD scp it to every worker and unpack it into ~/$REMOTE_DIR (files
#      deleted here stay there).
#      CODE=clone: `git clone --branch $BRANCH $REPO_URL $REMOTE_DIR` on every worker, or fetch
#      and check out $BRANCH where the clone exists.
#   3. SETUP=1: on every worker, in $REMOTE_DIR: $PYTHON -m pip install -e . "jax[tpu]"
#      -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
#   4. GCS_BUCKET set (on every run, also with SETUP=0): on every worker, mount the bucket at
#      /gcs/$GCS_BUCKET with gcsfuse, unless it is mounted there already:
#        mountpoint -q /gcs/$GCS_BUCKET || (sudo mkdir -p /gcs/$GCS_BUCKET &&
#          sudo chown "$USER" /gcs/$GCS_BUCKET && gcsfuse --implicit-dirs $GCS_BUCKET
#          /gcs/$GCS_BUCKET)
#   5. GCLOUD ssh $TPU_NAME FLAGS --worker=all --command="cd $REMOTE_DIR && $PYTHON -m
#      gtalign.main --config=$CONFIG --workdir=$WORKDIR MAIN_ARGS..."
# No coordinator flags are passed: on a TPU VM gtalign.main calls jax.distributed.initialize(),
# which finds the slice's workers itself. The TPU VM is left running afterwards; delete it with
#   gcloud compute tpus tpu-vm delete $TPU_NAME --zone=$ZONE
#
# Environment variables (default in brackets):
#   TPU_NAME          name of the TPU VM (required)
#   ZONE              its zone, e.g. us-west4-a (required)
#   PROJECT           Google Cloud project, passed as --project [gcloud's configured project]
#   ACCELERATOR_TYPE  slice type, e.g. v5litepod-16, v5p-16 [v5litepod-16]
#   RUNTIME_VERSION   TPU VM software version [v2-alpha-tpuv5-lite for v5litepod-*,
#                     v2-alpha-tpuv5 for v5p-*, v2-alpha-tpuv6e for v6e-*, tpu-ubuntu2204-base
#                     for v4-*; other types need it set]
#   SPOT              1: create a Spot TPU VM (--spot) [0]
#   CODE              `copy`: ship this checkout; `clone`: git clone REPO_URL on the workers
#                     [copy]
#   REPO_URL          repository to clone, for CODE=clone (required then)
#   BRANCH            branch to clone, for CODE=clone [main]
#   REMOTE_DIR        checkout directory on the workers, relative to the home directory
#                     [gtalign]
#   PYTHON            Python interpreter on the workers [python3]
#   SETUP             1: pip-install the package and jax[tpu] on the workers; 0: skip [1]
#   CONFIG            config file and preset [configs/grpo.py]
#   GCS_BUCKET        Cloud Storage bucket name (no gs://) to mount with gcsfuse at
#                     /gcs/$GCS_BUCKET on every worker (step 4); gcsfuse must be installed on the
#                     workers [none: nothing is mounted]
#   WORKDIR           run directory, a POSIX path that every worker of the slice shares: all
#                     processes write the multi-host checkpoints into it, and metrics files are
#                     written with plain open(), so gs:// URLs are not accepted
#                     [/gcs/$GCS_BUCKET/gtalign/$TPU_NAME with GCS_BUCKET; required without it,
#                     e.g. an NFS or Filestore mount]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Its arguments quoted for the workers' shell (bash), as one string.
remote_words() {
  local out
  printf -v out '%q ' "$@"
  printf '%s' "${out% }"
}

dry_run=0
main_args=()
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; main_args+=("$@"); break ;;
    *) main_args+=("$1") ;;
  esac
  shift
done

TPU_NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5litepod-16}
RUNTIME_VERSION=${RUNTIME_VERSION:-}
SPOT=${SPOT:-0}
CODE=${CODE:-copy}
REPO_URL=${REPO_URL:-}
BRANCH=${BRANCH:-main}
REMOTE_DIR=${REMOTE_DIR:-gtalign}
PYTHON=${PYTHON:-python3}
SETUP=${SETUP:-1}
CONFIG=${CONFIG:-configs/grpo.py}
GCS_BUCKET=${GCS_BUCKET:-}
WORKDIR=${WORKDIR:-}

[[ -n $TPU_NAME ]] || die "TPU_NAME is not set; name the TPU VM, e.g. TPU_NAME=gtalign-v5e"
[[ -n $ZONE ]] || die "ZONE is not set; give the TPU VM's zone, e.g. ZONE=us-west4-a"
if [[ -z $RUNTIME_VERSION ]]; then
  case $ACCELERATOR_TYPE in
    v5litepod-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    v4-*) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    *) die "RUNTIME_VERSION is not set and has no default for ACCELERATOR_TYPE=$ACCELERATOR_TYPE" ;;
  esac
fi
[[ $SPOT == 0 || $SPOT == 1 ]] || die "SPOT=$SPOT; expected 0 or 1"
[[ $SETUP == 0 || $SETUP == 1 ]] || die "SETUP=$SETUP; expected 0 or 1"
case $CODE in
  copy) ;;
  clone) [[ -n $REPO_URL ]] || die "REPO_URL is not set; CODE=clone needs the repository's URL" ;;
  *) die "CODE=$CODE; expected copy or clone" ;;
esac
[[ -n $REMOTE_DIR ]] || die "REMOTE_DIR is empty"
if [[ -n $GCS_BUCKET ]]; then
  [[ $GCS_BUCKET =~ ^[a-z0-9][a-z0-9._-]*[a-z0-9]$ ]] ||
    die "GCS_BUCKET=$GCS_BUCKET; expected a bucket name alone, e.g. GCS_BUCKET=my-bucket (no gs://)"
  mount_dir=/gcs/$GCS_BUCKET
  WORKDIR=${WORKDIR:-$mount_dir/gtalign/$TPU_NAME}
fi
[[ $WORKDIR != gs://* ]] ||
  die "WORKDIR=$WORKDIR; gs:// URLs are not supported (checkpoints and metrics need a POSIX path);\
 set GCS_BUCKET=BUCKET instead to mount the bucket with gcsfuse at /gcs/BUCKET on every worker"
[[ -n $WORKDIR ]] ||
  die "WORKDIR is not set; it must be a directory shared by all workers of the slice (e.g. an\
 NFS or Filestore mount), or set GCS_BUCKET=BUCKET to mount a Cloud Storage bucket with gcsfuse\
 and default to WORKDIR=/gcs/BUCKET/gtalign/$TPU_NAME"
if [[ $CODE == copy ]]; then
  repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  git -C "$repo_root" rev-parse --verify -q HEAD > /dev/null ||
    die "CODE=copy needs a git checkout with a commit at $repo_root"
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
flags=("--zone=$ZONE")
[[ -z $PROJECT ]] || flags+=("--project=$PROJECT")

# Prints the command (--dry-run), or echoes it to stderr and runs it.
step() {
  if ((dry_run)); then
    print_cmd "$@"
  else
    echo "+ $(print_cmd "$@")" >&2
    "$@"
  fi
}

# Runs the command $1 on every worker.
on_all_workers() {
  step "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${flags[@]}" --worker=all "--command=$1"
}

# 1. The TPU VM.
describe_cmd=("${gcloud_tpu[@]}" describe "$TPU_NAME" "${flags[@]}")
create_cmd=("${gcloud_tpu[@]}" create "$TPU_NAME" "${flags[@]}"
            "--accelerator-type=$ACCELERATOR_TYPE" "--version=$RUNTIME_VERSION")
((SPOT == 0)) || create_cmd+=(--spot)
if ((dry_run)); then
  print_cmd "${describe_cmd[@]}"
  echo "# if the describe fails (no TPU VM named $TPU_NAME yet):"
  print_cmd "${create_cmd[@]}"
else
  echo "+ $(print_cmd "${describe_cmd[@]}")" >&2
  if "${describe_cmd[@]}" > /dev/null 2>&1; then
    echo "tpu_pod.sh: reusing TPU VM $TPU_NAME in $ZONE" >&2
  else
    step "${create_cmd[@]}"
  fi
fi

# 2. The code.
dir=$(remote_words "$REMOTE_DIR")
if [[ $CODE == copy ]]; then
  rev=HEAD
  if [[ -n $(git -C "$repo_root" status --porcelain --untracked-files=no) ]]; then
    if stash=$(git -C "$repo_root" stash create 2> /dev/null) && [[ -n $stash ]]; then
      rev=$stash
    else
      echo "tpu_pod.sh: warning: could not snapshot uncommitted changes; shipping HEAD" >&2
    fi
  fi
  tarball="${TMPDIR:-/tmp}/gtalign-$TPU_NAME.tar.gz"
  remote_tarball=gtalign-code.tar.gz
  step git -C "$repo_root" archive --format=tar.gz "--output=$tarball" "$rev"
  step "${gcloud_tpu[@]}" scp "$tarball" "$TPU_NAME:$remote_tarball" "${flags[@]}" --worker=all
  on_all_workers "mkdir -p $dir && tar -xzf $remote_tarball -C $dir && rm $remote_tarball"
  step rm -f "$tarball"
else
  branch=$(remote_words "$BRANCH")
  on_all_workers "if [ -d $dir/.git ]; then git -C $dir fetch origin $branch && git -C $dir\
 checkout -B $branch FETCH_HEAD; else git clone --branch $branch $(remote_words "$REPO_URL")\
 $dir; fi"
fi

# 3. The package.
python=$(remote_words "$PYTHON")
if ((SETUP)); then
  on_all_workers "cd $dir && $python -m pip install -e . $(remote_words "jax[tpu]") -f\
 https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi

# 4. The bucket, mounted on every run: a mount does not outlive a restart of the VM.
if [[ -n $GCS_BUCKET ]]; then
  bucket=$(remote_words "$GCS_BUCKET")
  mount=$(remote_words "$mount_dir")
  on_all_workers "mountpoint -q $mount || (sudo mkdir -p $mount && sudo chown \"\$USER\" $mount\
 && gcsfuse --implicit-dirs $bucket $mount)"
fi

# 5. The run.
on_all_workers "cd $dir && $python -m gtalign.main $(remote_words "--config=$CONFIG" \
  "--workdir=$WORKDIR" ${main_args[@]+"${main_args[@]}"})"
