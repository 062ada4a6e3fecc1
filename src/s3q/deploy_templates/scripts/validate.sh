#!/usr/bin/env bash
# ValidateService: succeed once the unit is active and `s3q status --check` passes (the
# queue is reachable with this server's configuration and credentials, and no expired
# lease is overdue for takeover) twice in a row with the same worker process; fail after
# S3Q_VALIDATE_TIMEOUT seconds, which fails the deployment (CodeDeploy rolls back if
# rollback is enabled).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

timeout="${S3Q_VALIDATE_TIMEOUT:-@@VALIDATE_TIMEOUT@@}"
interval="${S3Q_VALIDATE_INTERVAL:-5}"
if [ -f "$CONF_DIR/s3q.env" ]; then  # the unit's EnvironmentFile: same settings as it
  set -a
  # shellcheck source=/dev/null
  . "$CONF_DIR/s3q.env"
  set +a
fi
cd "$APP"  # the unit's WorkingDirectory: an s3q.toml there would win, as for the unit
deadline=$((SECONDS + timeout))
healthy_pid=""
while :; do
  if ! "$SYSTEMCTL" is-active --quiet "$SERVICE"; then
    why="$SERVICE is not active"
    healthy_pid=""
  elif ! out=$("$S3Q" status --check 2>&1); then
    why="s3q status --check failed: $(printf '%s\n' "$out" | tail -n 5)"
    healthy_pid=""
  else
    pid=$("$SYSTEMCTL" show --property MainPID --value "$SERVICE" || true)
    if [ -n "$healthy_pid" ] && [ "$pid" = "$healthy_pid" ]; then
      log "$SERVICE is active (pid $pid) and the queue is healthy"
      exit 0
    fi
    why="healthy once (pid ${pid:-?}); checking that it stays up"
    healthy_pid="$pid"
    if [ -z "$pid" ] || [ "$pid" = 0 ]; then
      why="$SERVICE has no main process"
      healthy_pid=""
    fi
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "not healthy after ${timeout}s: $why"
    "$JOURNALCTL" --unit "$SERVICE" --lines 30 --no-pager || true
    exit 1
  fi
  log "$why"
  sleep "$interval"
done
