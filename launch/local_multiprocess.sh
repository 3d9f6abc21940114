#!/usr/bin/env bash
# Runs `python -m gtalign.main` as NUM_PROCESSES cooperating processes on this machine: a
# multi-host run without the hosts, for testing multi-process code paths on a laptop or CI box.
#
# Usage:
#   [VAR=value ...] launch/local_multiprocess.sh [--dry-run] [-h|--help] [--] [MAIN_ARGS ...]
#
#   --dry-run   print the command of every process, one per line, and run nothing
#   -h, --help  print this help
#   MAIN_ARGS   everything after `--`, and every argument not recognised above, is passed on to
#               gtalign.main, e.g. `-- --config.rl.steps=2`
#
# Process I runs, from the repository root (the script changes there first):
#   [env XLA_FLAGS=... JAX_PLATFORMS=cpu] $PYTHON -m gtalign.main --config=$CONFIG
#       --workdir=$WORKDIR --coordinator=127.0.0.1:$PORT --num_processes=$NUM_PROCESSES
#       --process_id=I MAIN_ARGS...
# with its stdout and stderr in $LOG_DIR/process_I.log; process 0 is also shown on the terminal.
# The script waits for all processes. When one fails, the others are stopped (SIGTERM, then
# SIGKILL after 5 s), the failed process and the end of its log are printed, and the script exits
# with that process's status. Ctrl-C or SIGTERM stops every process. Exit 0 means all succeeded.
#
# Environment variables (default in brackets):
#   NUM_PROCESSES        number of processes [2]
#   DEVICES_PER_PROCESS  simulated CPU devices per process [4]: K > 0 sets JAX_PLATFORMS=cpu and
#                        adds --xla_force_host_platform_device_count=K to XLA_FLAGS (replacing a
#                        device count already there); 0 leaves the devices and XLA_FLAGS alone
#   PORT                 coordinator port on 127.0.0.1 [12355]; change it when that is taken
#   CONFIG               config file and preset [configs/grpo.py:tiny]
#   WORKDIR              run directory, shared by the processes [workdir/local_multiprocess]
#   PYTHON               Python interpreter: a command name or a path to an executable [python]
#   LOG_DIR              per-process logs [$WORKDIR/logs]
#
# Relative paths are relative to the repository root.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

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

NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-4}
PORT=${PORT:-12355}
CONFIG=${CONFIG:-configs/grpo.py:tiny}
WORKDIR=${WORKDIR:-workdir/local_multiprocess}
PYTHON=${PYTHON:-python}
LOG_DIR=${LOG_DIR:-$WORKDIR/logs}

[[ $NUM_PROCESSES =~ ^[1-9][0-9]*$ ]] ||
  die "NUM_PROCESSES=$NUM_PROCESSES; expected a positive integer"
[[ $DEVICES_PER_PROCESS =~ ^[0-9]+$ ]] ||
  die "DEVICES_PER_PROCESS=$DEVICES_PER_PROCESS; expected 0 or a positive integer"
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
  die "PORT=$PORT; expected a port number, 1-65535"
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

env_prefix=()
if ((DEVICES_PER_PROCESS > 0)); then
  xla_flags=()
  read -ra existing <<< "${XLA_FLAGS:-}"
  for flag in ${existing[@]+"${existing[@]}"}; do
    [[ $flag == --xla_force_host_platform_device_count=* ]] || xla_flags+=("$flag")
  done
  xla_flags+=("--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
  env_prefix=(env "XLA_FLAGS=${xla_flags[*]}" JAX_PLATFORMS=cpu)
fi

# The command line of process $1, in the array `cmd`.
make_cmd() {
  cmd=(${env_prefix[@]+"${env_prefix[@]}"} "$PYTHON" -m gtalign.main "--config=$CONFIG"
       "--workdir=$WORKDIR" "--coordinator=127.0.0.1:$PORT" "--num_processes=$NUM_PROCESSES"
       "--process_id=$1" ${main_args[@]+"${main_args[@]}"})
}

if ((dry_run)); then
  echo "# in $repo_root, all at once; process I's output to $LOG_DIR/process_I.log"
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    make_cmd "$i"
    print_cmd "${cmd[@]}"
  done
  exit 0
fi

mkdir -p "$LOG_DIR"
pids=()

# Stops the processes still running: SIGTERM, then SIGKILL for those alive after 5 s.
# (jax.distributed catches SIGTERM as a preemption notice, so SIGTERM alone may not stop one.)
stop_all() {
  local pid alive=() left tries
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill -0 "$pid" 2>/dev/null && alive+=("$pid")
  done
  ((${#alive[@]})) || return 0
  kill -TERM "${alive[@]}" 2>/dev/null || true
  for ((tries = 0; tries < 50; tries++)); do
    left=()
    for pid in "${alive[@]}"; do
      kill -0 "$pid" 2>/dev/null && left+=("$pid")
    done
    ((${#left[@]})) || break
    sleep 0.1
  done
  ((${#left[@]} == 0)) || kill -KILL "${left[@]}" 2>/dev/null || true
  wait "${alive[@]}" 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  make_cmd "$i"
  log="$LOG_DIR/process_$i.log"
  if ((i == 0)); then
    # Process 0 writes to a pipe that `tee` copies to its log and to the terminal.
    exec 3> >(tee -- "$log")
    tee_pid=$!
    "${cmd[@]}" >&3 2>&1 3>&- < /dev/null &
    exec 3>&-
  else
    "${cmd[@]}" > "$log" 2>&1 < /dev/null &
  fi
  pids+=("$!")
  echo "local_multiprocess.sh: started process $i (pid $!), log $log" >&2
done

# Polls until every process has ended, or until one has failed.
running=("${!pids[@]}")
while ((${#running[@]})); do
  still=()
  for i in "${running[@]}"; do
    if kill -0 "${pids[i]}" 2>/dev/null; then
      still+=("$i")
      continue
    fi
    status=0
    wait "${pids[i]}" || status=$?
    if ((status != 0)); then
      stop_all
      wait "$tee_pid" 2>/dev/null || true  # the rest of process 0's output first
      log="$LOG_DIR/process_$i.log"
      {
        echo "local_multiprocess.sh: process $i of $NUM_PROCESSES failed with exit status" \
          "$status (the others were stopped); last lines of $log:"
        tail -n 30 "$log"
      } >&2
      exit "$status"
    fi
  done
  running=(${still[@]+"${still[@]}"})
  ((${#running[@]} == 0)) || sleep 0.2
done
wait "$tee_pid" 2>/dev/null || true
echo "local_multiprocess.sh: all $NUM_PROCESSES processes finished; logs in $LOG_DIR" >&2
