#!/usr/bin/env bash
# ValidateService: succeed once the unit is active and `s3q status --check` passes (the
# queue is reachable with this server's configuration and credentials, and no expired
# lease is overdue for takeover) twice in a row with the same worker process; fail after
# S3Q_VALIDATE_TIMEOUT seconds, which fails the deployment (CodeDeploy rolls back if
# rollback is enabled). The check runs with the environment of the worker process itself
# (/proc/PID/environ): /etc/s3q/s3q.env as systemd read it (not as a shell would: no $
# expansion, spaces inside a value kept; quotes around a whole value removed, others kept),
# the unit's Environment= lines and its drop-ins.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

timeout="${S3Q_VALIDATE_TIMEOUT:-@@VALIDATE_TIMEOUT@@}"
interval="${S3Q_VALIDATE_INTERVAL:-5}"

# Run "$@" with the variables of process $1, except those systemd gives every service
# (its PATH, NOTIFY_SOCKET, the user's HOME, ...). A subshell: they stay there.
with_worker_env() (
  local kv
  while IFS= read -r -d '' kv || [ -n "$kv" ]; do
    # never let bash print an assignment (a value may be a secret) in an error
    [[ "${kv%%=*}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    case "${kv%%=*}" in
      PATH | LANG | LANGUAGE | LC_* | USER | LOGNAME | HOME | SHELL | TERM | INVOCATION_ID | \
        JOURNAL_STREAM | NOTIFY_SOCKET | WATCHDOG_* | SYSTEMD_* | MAINPID | MANAGERPID | \
        LISTEN_* | *_DIRECTORY | MEMORY_PRESSURE_* | XDG_* | TRIGGER_* | MONITOR_*) ;;
      *) export "${kv?}" ;;
    esac
  done < "$PROC/$1/environ"
  "${@:2}"
)

cd "$APP"  # the unit's WorkingDirectory (relative paths in its settings)
deadline=$((SECONDS + timeout))
healthy_pid=""
while :; do
  pid=""
  if ! "$SYSTEMCTL" is-active --quiet "$SERVICE"; then
    why="$SERVICE is not active"
  elif ! pid=$("$SYSTEMCTL" show --property MainPID --value "$SERVICE") || [ -z "$pid" ] \
      || [ "$pid" = 0 ] || [ ! -r "$PROC/$pid/environ" ]; then
    why="$SERVICE has no main process"
    pid=""
  elif ! out=$(with_worker_env "$pid" "$S3Q" status --check 2>&1); then
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
    log "not healthy after ${timeout}s: $why"
    "$JOURNALCTL" --unit "$SERVICE" --lines 30 --no-pager || true
    exit 1
  fi
  log "$why"
  sleep "$interval"
done
