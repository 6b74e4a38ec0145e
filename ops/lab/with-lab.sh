#!/usr/bin/env bash
# Runs a command with the lab up and its environment set; stops the lab afterwards only if
# this script started it (a lab someone else brought up keeps running).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/paths.sh"
started=no
if ! { [ -f "$BP_LAB_RUN/pids/dockerd.pid" ] && kill -0 "$(cat "$BP_LAB_RUN/pids/dockerd.pid")" 2>/dev/null; }; then
  # A lab that failed half-way up is stopped again (down.sh stops only the PIDs up.sh recorded).
  bash "$here/up.sh" || { rc=$?; bash "$here/down.sh"; exit "$rc"; }
  started=yes
fi
stop() { [ "$started" = yes ] && bash "$here/down.sh"; }
trap 'stop; exit 130' INT TERM
# shellcheck disable=SC1091
. "$BP_LAB_DIR/env.sh"
export BUILDPLANE_LAB_ENV="$BP_LAB_DIR/env.json"
"$@"
rc=$?
stop
exit $rc
