# shellcheck shell=bash disable=SC2034  # the variables are used by the hooks sourcing this
# Settings shared by the s3q CodeDeploy hooks (sourced by each of them, never run).
# Every path and command can be overridden from the environment, so the hooks can be tried
# in a scratch directory with stand-in commands, e.g.
#   S3Q_ROOT=/tmp/root SYSTEMCTL=/tmp/bin/systemctl scripts/start.sh
ROOT="${S3Q_ROOT:-}"                                 # prefix of /etc and the app dir
APP_DIR="${S3Q_APP_DIR:-@@APP_DIR@@}"                # where CodeDeploy installs the revision
SERVICE_USER="${S3Q_SERVICE_USER:-@@SERVICE_USER@@}"
SERVICE="${S3Q_SERVICE_NAME:-@@SERVICE_NAME@@}.service"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
JOURNALCTL="${JOURNALCTL:-journalctl}"
USERADD="${USERADD:-useradd}"
GETENT="${GETENT:-getent}"
CHOWN="${CHOWN:-chown}"
SETPRIV="${SETPRIV:-setpriv}"                        # runs a check as the service user
PYTHON="${PYTHON:-python3}"                          # creates the virtualenv
APP="$ROOT$APP_DIR"
VENV="$APP/.venv"
S3Q="${S3Q:-$VENV/bin/s3q}"
UNIT_DIR="$ROOT/etc/systemd/system"
CONF_DIR="$ROOT/etc/s3q"
PROC="$ROOT/proc"                                    # the processes' environ files
BACKOFF="$ROOT/run/s3q/${SERVICE%.service}.start-backoff"  # the unit's S3Q_START_BACKOFF

log() {
  echo "s3q $(basename "$0"): $*"
}
