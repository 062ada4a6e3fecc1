#!/usr/bin/env bash
# AfterInstall: the virtualenv (s3q and the app's requirements.txt), the systemd unit and,
# the first time only, the configuration in /etc/s3q.
#   s3q comes from the newest wheels/s3q-*.whl of the revision if there is one, else from
#   $S3Q_SPEC (default: the package index's s3q of the version that wrote this revision,
#   so that a rollback or a server launched later runs the same s3q); pip honours
#   PIP_INDEX_URL and the like.
#   /etc/s3q/s3q.toml and s3q.env are never overwritten: they are the server's to edit.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "refreshing the virtualenv $VENV"
else
  log "creating the virtualenv $VENV"
  "$PYTHON" -m venv --clear "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
wheel=""
if [ -d "$APP/wheels" ]; then
  pip+=(--find-links "$APP/wheels")
  wheel=$(find "$APP/wheels" -maxdepth 1 -name 's3q-*.whl' | sort -V | tail -n 1)
fi
if [ -n "$wheel" ]; then
  log "installing $(basename "$wheel")"
  "${pip[@]}" --upgrade "$wheel"
  # the same version number may be a newer build: replace it (s3q only, not its deps)
  "${pip[@]}" --force-reinstall --no-deps "$wheel"
else
  log "installing ${S3Q_SPEC:-@@PACKAGE_SPEC@@}"
  "${pip[@]}" --upgrade "${S3Q_SPEC:-@@PACKAGE_SPEC@@}"
fi
if [ -f "$APP/requirements.txt" ]; then
  log "installing requirements.txt"
  "${pip[@]}" --requirement "$APP/requirements.txt"
fi

log "installing $UNIT_DIR/$SERVICE"
install -D -m 0644 "$APP/deploy/$SERVICE" "$UNIT_DIR/$SERVICE"
"$SYSTEMCTL" daemon-reload

for file in s3q.toml s3q.env; do
  if [ -e "$CONF_DIR/$file" ]; then
    log "keeping $CONF_DIR/$file"
  else
    log "installing $CONF_DIR/$file (edit it there)"
    install -D -m 0640 "$APP/deploy/$file" "$CONF_DIR/$file"
    "$CHOWN" "root:$SERVICE_USER" "$CONF_DIR/$file"
  fi
done
