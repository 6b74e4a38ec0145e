#!/usr/bin/env bash
# Stops what up.sh started, by the PIDs it recorded — never by name. Data stays for the next up.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/paths.sh"
piddir="$BP_LAB_RUN/pids"
[ -d "$piddir" ] || exit 0
# The cluster from the top down, dockerd before containerd (the worker's too), registries last.
for name in otelcol routes kwok kube-scheduler kube-controller-manager kube-apiserver etcd dockerd-worker containerd-worker dockerd containerd registry-final registry-cache registry-mirror; do
  f="$piddir/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    printf 'lab: stopped %s (pid %s)\n' "$name" "$pid" >&2
  fi
  rm -f "$f"
done
