#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: a head (GCS + dashboard) and N worker nodes, each node its own
# `ray start --block` process. It is the smallest real cluster: jobs reach it only through `ray job submit` /
# `launch.py submit`, Train workers can be spread over nodes (each worker node carries its own custom resource,
# node2, node3, ...), and token authentication is on, exactly as on a cloud cluster.
#
#   clusters/local_cluster.sh start | status | stop
#
# Settings (environment):
#   UER_PYTHON            python of the project's venv (default: <project>/.venv/bin/python); its bin/ goes first
#                         on every node's PATH, so a job's `python launch.py ...` runs in that venv
#   UER_CLUSTER_DIR       state, logs and the nodes' Ray temp dirs (default /tmp/uer-cluster-$USER; keep it short:
#                         Ray's socket paths live under it and Unix sockets allow ~107 characters)
#   UER_CLUSTER_WORKERS   worker nodes besides the head (default 2)
#   UER_CLUSTER_CPUS      CPUs each node advertises (default 1)
#   UER_CLUSTER_PORT      GCS port (default 6390, not Ray's 6379, to stay clear of a Redis or another Ray)
#   UER_DASHBOARD_PORT    dashboard / job API port (default 8265); the dashboard listens on 127.0.0.1 only
#   RAY_AUTH_TOKEN_PATH   token file (default ~/.ray/auth_token, what Ray's clients read); created if missing
#   RAY_AUTH_TOKEN        or the token itself
# Every other variable of the calling shell reaches the nodes and from them every job (e.g. AWS_ENDPOINT_URL,
# WANDB_MODE, UER_DATA): a node's environment, not a job's runtime_env, is where secrets belong.
#
# Stopping never runs `ray stop`: that kills every Ray process of the machine, other people's included. Each node
# is stopped by its own pid (its SIGTERM handler shuts the node's processes down), then any process still carrying
# this cluster's UER_CLUSTER_ID (a job's driver, a Train worker) is killed by pid.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${UER_PYTHON:-$ROOT/.venv/bin/python}"
BIN="$(dirname "$PYTHON")"  # not resolved: a venv's python is a symlink to the base interpreter
DIR="${UER_CLUSTER_DIR:-/tmp/uer-cluster-$(id -un)}"
WORKERS="${UER_CLUSTER_WORKERS:-2}"
CPUS="${UER_CLUSTER_CPUS:-1}"
PORT="${UER_CLUSTER_PORT:-6390}"
DASHBOARD_PORT="${UER_DASHBOARD_PORT:-8265}"
START_TIMEOUT_S=90
STOP_TIMEOUT_S=30

die() { echo "local_cluster: $*" >&2; exit 1; }

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_pidfiles() {  # worker nodes first, head last: the order to stop them in
  local f
  for f in "$DIR"/node*.pid; do [[ -e "$f" ]] && echo "$f"; done
  [[ -e "$DIR/head.pid" ]] && echo "$DIR/head.pid"
  return 0
}

# Token authentication stays on: every node and client shares one token, kept in a file readable by us only.
ensure_token() {
  export RAY_AUTH_MODE=token
  [[ -n "${RAY_AUTH_TOKEN:-}" ]] && return
  local path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
  if [[ ! -s "$path" ]]; then
    mkdir -p "$(dirname "$path")"
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$path")
    echo "local_cluster: generated a token in $path"
  fi
}

# Start one node in the background; its pid goes to <name>.pid, its output to <name>.log.
start_node() {
  local name="$1"; shift
  # UER_CLUSTER_ID marks every process of this cluster (inherited by raylets, workers, job drivers) so that stop
  # can find what a dead node left behind; the dashboard agent gets a free port, as its default (52365) is shared
  # by every Ray node of the machine. Each node has its own temp dir, as on separate machines: sharing one, a node
  # that unpacks a job's working_dir replaces the copy another node's driver is running from. No drain on SIGTERM: it exists for Serve replicas (none here) and otherwise
  # holds a node that kept idle workers for its full 30 s.
  UER_CLUSTER_ID="$CLUSTER_ID" PATH="$BIN:$PATH" \
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}" nohup "$BIN/ray" start --block \
    --node-ip-address=127.0.0.1 --num-cpus="$CPUS" --num-gpus=0 --temp-dir="$DIR/$name" \
    --dashboard-agent-listen-port="$(free_port)" "$@" > "$DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

wait_started() {
  local name="$1" waited=0
  until grep -q "Ray runtime started" "$DIR/$name.log" 2>/dev/null; do
    if ! alive "$DIR/$name.pid"; then
      tail -n 30 "$DIR/$name.log" >&2
      return 1
    fi
    (( waited++ >= START_TIMEOUT_S * 2 )) && { echo "local_cluster: $name not up after ${START_TIMEOUT_S}s" >&2; return 1; }
    sleep 0.5
  done
}

cmd_start() {
  [[ -x "$PYTHON" ]] || die "no python at $PYTHON (run 'make install', or set UER_PYTHON)"
  alive "$DIR/head.pid" && die "already running (state in $DIR); '$0 stop' first"
  rm -rf "$DIR" && mkdir -p "$DIR"
  ensure_token
  CLUSTER_ID="uer-$(date +%s)-$$"
  echo "$CLUSTER_ID" > "$DIR/cluster_id"
  printf 'PORT=%s\nDASHBOARD_PORT=%s\n' "$PORT" "$DASHBOARD_PORT" > "$DIR/ports"
  local started=$SECONDS
  start_node head --head --port="$PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --include-dashboard=true --ray-client-server-port="$(free_port)" --resources='{"head": 1}'
  wait_started head || { cmd_stop; die "the head did not start (log: $DIR/head.log)"; }
  local i
  for (( i = 2; i <= WORKERS + 1; i++ )); do
    start_node "node$i" --address="127.0.0.1:$PORT" --resources="{\"node$i\": 1}"
  done
  for (( i = 2; i <= WORKERS + 1; i++ )); do
    wait_started "node$i" || { cmd_stop; die "node$i did not start (log: $DIR/node$i.log)"; }
  done
  cat <<EOF
local_cluster: up in $(( SECONDS - started ))s: head + $WORKERS worker node(s), $CPUS CPU(s) each, token auth on
  dashboard / job API: http://127.0.0.1:$DASHBOARD_PORT
  submit:  launch.py submit --address http://127.0.0.1:$DASHBOARD_PORT -- pretrain --config jobs/<job>.yaml
      or:  RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:$DASHBOARD_PORT --working-dir . -- python launch.py ...
  stop:    $0 stop
EOF
}

cmd_status() {
  alive "$DIR/head.pid" || { echo "local_cluster: not running"; return 3; }
  local f down=0
  for f in $(node_pidfiles); do
    if alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"; else echo "$(basename "$f" .pid): DOWN"; down=1; fi
  done
  # shellcheck disable=SC1091
  source "$DIR/ports"
  ensure_token
  "$BIN/ray" status --address="127.0.0.1:$PORT"
  return $down
}

# Pids of processes (ours) whose environment carries this cluster's UER_CLUSTER_ID.
marked_pids() {
  local id="$1" p
  for p in /proc/[0-9]*; do
    if { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "UER_CLUSTER_ID=$id"; then echo "${p#/proc/}"; fi
  done
}

cmd_stop() {
  [[ -f "$DIR/cluster_id" ]] || { echo "local_cluster: nothing to stop in $DIR"; return 0; }
  local id f pid waited=0
  id="$(cat "$DIR/cluster_id")"
  for f in $(node_pidfiles); do
    alive "$f" && kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  for f in $(node_pidfiles); do
    while alive "$f" && (( waited++ < STOP_TIMEOUT_S * 10 )); do sleep 0.1; done
    alive "$f" && kill -KILL "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  for pid in $(marked_pids "$id"); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -f "$DIR/cluster_id"
  echo "local_cluster: stopped"
}

case "${1:-}" in
  start) cmd_start ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 start|status|stop  (settings: see the comment at the top of $0)" >&2; exit 2 ;;
esac
