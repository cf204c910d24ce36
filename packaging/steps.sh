# Sourced by the setup scripts: `step NAME COMMAND...` says what it is doing, runs COMMAND (under
# `set -e`, so that a function stops at its first failing command) with its output kept aside, and
# when COMMAND fails shows the end of that output and names the step, then exits with its status.
# A line "note: ..." that COMMAND prints is shown under the step's name.

step() {
  local name=$1 log rc errexit=
  shift
  printf '==> %s\n' "$name"
  log=$(mktemp "${TMPDIR:-/tmp}/pfs-setup-XXXXXX")
  [[ $- == *e* ]] && errexit=1
  set +e
  (set -e; "$@") >"$log" 2>&1
  rc=$?
  [ -n "$errexit" ] && set -e
  if [ "$rc" -eq 0 ]; then
    sed -n 's/^note: /    /p' "$log"
    rm -f "$log"
    return 0
  fi
  tail -n 40 "$log" | sed 's/^/    | /' >&2
  rm -f "$log"
  printf 'setup failed at step "%s" (exit %d); the end of its output is above\n' "$name" "$rc" >&2
  exit "$rc"
}
