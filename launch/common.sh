# shellcheck shell=bash
# Helpers shared by the launch scripts; each script sources this file after `set -euo pipefail`.
# `${BASH_SOURCE[-1]}` is the script that was run (or SLURM's spooled copy of it).

# Prints the script's header comment (after the shebang, without #SBATCH lines) as its help.
usage() {
  awk 'NR == 1 || /^#SBATCH/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' \
    "${BASH_SOURCE[-1]}"
}

die() {
  echo "${BASH_SOURCE[-1]##*/}: error: $*" >&2
  exit 2
}

# Prints its arguments as one command line that a shell reads back as the same words; a word
# that needs quotes gets single quotes, after its `NAME=` or `--option=` part if it has one.
print_cmd() {
  local line="" word prefix sq="'"
  local safe='^[A-Za-z0-9_@%+=:,./-]+$' option='^([A-Za-z0-9_.-]+=)(.*)$'
  for word in "$@"; do
    if ! [[ $word =~ $safe ]]; then
      prefix=""
      if [[ $word =~ $option ]]; then
        prefix=${BASH_REMATCH[1]}
        word=${BASH_REMATCH[2]}
      fi
      word="$prefix'${word//$sq/$sq\\$sq$sq}'"
    fi
    line+="${line:+ }$word"
  done
  printf '%s\n' "$line"
}
