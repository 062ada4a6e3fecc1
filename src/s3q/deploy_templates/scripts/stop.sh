#!/usr/bin/env bash
# ApplicationStop: stop the worker gracefully before a new revision is installed.
# CodeDeploy runs the PREVIOUS revision's copy of this script (none on a first deployment),
# so it must succeed when nothing is installed yet. `systemctl stop` sends SIGTERM to the
# worker and waits: the worker stops claiming, lets running jobs finish for `grace`
# seconds, gives the rest back to wait/ and exits 0 (SIGKILL only after TimeoutStopSec).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

if [ ! -e "$UNIT_DIR/$SERVICE" ]; then
  log "$SERVICE is not installed: nothing to stop"
  exit 0
fi
log "stopping $SERVICE (running jobs finish or go back to wait/)"
"$SYSTEMCTL" stop "$SERVICE" || log "systemctl stop $SERVICE failed"
if "$SYSTEMCTL" is-active --quiet "$SERVICE"; then
  log "$SERVICE is still active"
  exit 1
fi
log "$SERVICE stopped"
