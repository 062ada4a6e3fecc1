#!/usr/bin/env bash
# ApplicationStart: start the worker now and at every boot. Each start of the worker first
# re-queues what this worker id held when it last stopped (own recovery), so a crash or a
# reboot loses nothing and needs no reset script.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

"$SYSTEMCTL" enable "$SERVICE"
log "restarting $SERVICE"
"$SYSTEMCTL" restart "$SERVICE"
