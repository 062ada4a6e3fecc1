#!/usr/bin/env bash
# BeforeInstall: create the service user (a system user and group, no login, no home of
# its own) before CodeDeploy copies the files and gives them to it (appspec `permissions`).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

if "$GETENT" passwd "$SERVICE_USER" >/dev/null; then
  log "user $SERVICE_USER exists"
else
  if "$GETENT" group "$SERVICE_USER" >/dev/null; then
    group=(--gid "$SERVICE_USER")
  else
    group=(--user-group)
  fi
  log "creating the system user $SERVICE_USER"
  "$USERADD" --system "${group[@]}" --home-dir "$APP_DIR" --no-create-home \
    --shell /usr/sbin/nologin "$SERVICE_USER"
fi
mkdir -p "$CONF_DIR"
