#!/usr/bin/env bash
# ValidateService: succeed once the unit is active and `s3q status --check` passes (the
# queue is reachable with this server's configuration and credentials, and no expired
# lease is overdue for takeover) twice in a row with the same worker process; fail after
# S3Q_VALIDATE_TIMEOUT seconds, which fails the deployment (CodeDeploy rolls back if
# rollback is enabled). The check runs with the environment of the worker process itself
# (/proc/PID/environ): /etc/s3q/s3q.env as systemd read it (not as a shell would: no $
# expansion, spaces inside a value kept; quotes around a whole value removed, others kept),
# the unit's Environment= lines and its drop-ins; and, once its handler is checked, as the
# worker's own command line with --check-queue (`s3q status --check` with its flags too: a
# --queue or --profile given there, a drop-in's ExecStart's, is the queue checked).
# The handler first: as soon as the unit has a worker process (also one still starting, or
# waiting to retry a start that failed), its own command line is run with --check-handler,
# as the service user with the worker's environment: the program, the script or module it
# is given, or the Python function, must load (nothing is claimed or run). A handler that
# cannot load fails the deployment at once, with the reason.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

timeout="${S3Q_VALIDATE_TIMEOUT:-@@VALIDATE_TIMEOUT@@}"
interval="${S3Q_VALIDATE_INTERVAL:-5}"

# Run "$@" with the variables of process $1, except those systemd gives every service
# (its PATH, NOTIFY_SOCKET, the user's HOME, ...); with --as-worker first, its PATH, HOME,
# user and locale too (the handler check finds programs as the worker does). A subshell:
# they stay there.
with_worker_env() (
  local kv own=""
  if [ "$1" = --as-worker ]; then
    own=1
    shift
  fi
  while IFS= read -r -d '' kv || [ -n "$kv" ]; do
    # never let bash print an assignment (a value may be a secret) in an error
    [[ "${kv%%=*}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    case "${kv%%=*}" in
      PATH | LANG | LANGUAGE | LC_* | USER | LOGNAME | HOME | SHELL)
        [ -z "$own" ] || export "${kv?}" ;;
      TERM | INVOCATION_ID | JOURNAL_STREAM | NOTIFY_SOCKET | WATCHDOG_* | SYSTEMD_* | \
        MAINPID | MANAGERPID | LISTEN_* | *_DIRECTORY | MEMORY_PRESSURE_* | XDG_* | \
        TRIGGER_* | MONITOR_*) ;;
      *) export "${kv?}" ;;
    esac
  done < "$PROC/$1/environ" || exit 1
  "${@:2}"
)

# The arguments process $1 gives its s3q program (the unit's ExecStart, drop-ins included)
# into `args`; false unless they run `s3q ... worker`.
worker_args() {
  local argv=() i
  mapfile -d '' argv < "$PROC/$1/cmdline" 2>/dev/null || return 1
  for i in "${!argv[@]}"; do
    if [ "${argv[i]##*/}" = s3q ]; then
      args=("${argv[@]:i+1}")
      [[ " ${args[*]} " == *" worker "* ]]
      return
    fi
  done
  return 1
}

fail() {
  log "$1"
  "$JOURNALCTL" --unit "$SERVICE" --lines 30 --no-pager || true
  exit 1
}

cd "$APP"  # the unit's WorkingDirectory (relative paths in its settings)
deadline=$((SECONDS + timeout))
healthy_pid=""
checked_pid=""
args=()
queue_check=(status --check)  # a worker command line's own: "${args[@]}" --check-queue
while :; do
  pid=$("$SYSTEMCTL" show --property MainPID --value "$SERVICE") || pid=""
  if [ -z "$pid" ] || [ "$pid" = 0 ] || [ ! -r "$PROC/$pid/environ" ]; then
    pid=""
  elif [ "$pid" = "$checked_pid" ]; then
    :
  elif ! worker_args "$pid"; then  # a wrapper, or gone: nothing of s3q's to check
    checked_pid=$pid
    queue_check=(status --check)
    log "pid $pid runs no 's3q ... worker' command line: its handler is not checked"
  else
    rc=0
    out=$(with_worker_env --as-worker "$pid" "$SETPRIV" --reuid="$SERVICE_USER" \
      --regid="$SERVICE_USER" --init-groups -- "$S3Q" "${args[@]}" --check-handler 2>&1) \
      || rc=$?
    if [ "$rc" = 2 ]; then  # s3q refused its settings or handler: waiting cannot help
      fail "the worker cannot run its handler: $(printf '%s\n' "$out" | tail -n 5)"
    elif [ "$rc" = 0 ]; then
      checked_pid=$pid
      queue_check=("${args[@]}" --check-queue)  # its queue, profile, ... flags too
      log "$(printf '%s\n' "$out" | tail -n 1)"
    else  # the process went away meanwhile, or the check could not run: next round
      log "could not check the handler (exit $rc): $(printf '%s\n' "$out" | tail -n 2)"
    fi
  fi
  if ! "$SYSTEMCTL" is-active --quiet "$SERVICE"; then
    why="$SERVICE is not active"
    pid=""
  elif [ -z "$pid" ]; then
    why="$SERVICE has no main process"
  elif [ "$pid" != "$checked_pid" ]; then
    why="the handler of pid $pid is not checked yet"
    pid=""
  elif ! out=$(with_worker_env "$pid" "$S3Q" "${queue_check[@]}" 2>&1); then
    why="s3q status --check failed: $(printf '%s\n' "$out" | tail -n 5)"
    pid=""
  elif [ "$pid" = "$healthy_pid" ]; then
    log "$SERVICE is active (pid $pid) and the queue is healthy"
    exit 0
  else
    why="healthy once (pid $pid); checking that it stays up"
  fi
  healthy_pid="$pid"
  if [ "$SECONDS" -ge "$deadline" ]; then
    fail "not healthy after ${timeout}s: $why"
  fi
  log "$why"
  sleep "$interval"
done
