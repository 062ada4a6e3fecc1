#!/usr/bin/env bash
# ApplicationStart: start the worker now and at every boot. Each start of the worker first
# re-queues what this worker id held when it last stopped (own recovery), so a crash or a
# reboot loses nothing and needs no reset script.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

"$SYSTEMCTL" enable "$SERVICE"
# a worker that crash-looped (a bad setting) may have hit the unit's start limit: then
# systemd refuses every start, this revision's (the fix) too, until the count is reset
"$SYSTEMCTL" reset-failed "$SERVICE" 2>/dev/null || true
# ... and its start backoff (the failed starts of a crash loop) would make this start, the
# new revision's, wait first: forget them
rm -f "$BACKOFF"
log "restarting $SERVICE"
"$SYSTEMCTL" restart "$SERVICE"
