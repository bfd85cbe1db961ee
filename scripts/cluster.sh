#!/usr/bin/env bash
# Start / stop a local 3-peer Sextant cluster on this machine (loopback only).
#
#   scripts/cluster.sh start    # builds if needed; peers on REST 6333/6343/6353, p2p 6335/6345/6355
#   scripts/cluster.sh status   # GET /cluster of every peer
#   scripts/cluster.sh stop     # SIGTERM all peers (data stays in ./cluster-data)
#   scripts/cluster.sh clean    # stop and delete ./cluster-data
#
# The p2p port carries Raft traffic (and, later, point operations between peers): never
# expose it outside the cluster's network.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${CLUSTER_DATA:-./cluster-data}
BIN=${SEXTANT_BIN:-./target/release/sextant}
N=${PEERS:-3}

rest_port() { echo $((6333 + 10 * ($1 - 1))); }
p2p_port() { echo $((6335 + 10 * ($1 - 1))); }

start() {
  [ -x "$BIN" ] || cargo build --release --bin sextant
  for i in $(seq 1 "$N"); do
    dir="$DATA/peer$i"; mkdir -p "$dir"
    args=(--uri "http://127.0.0.1:$(p2p_port "$i")")
    [ "$i" -gt 1 ] && args+=(--bootstrap "http://127.0.0.1:$(p2p_port 1)")
    (cd "$dir" && QDRANT__CLUSTER__ENABLED=true \
      QDRANT__SERVICE__HTTP_PORT="$(rest_port "$i")" \
      QDRANT__SERVICE__GRPC_PORT="$(( $(rest_port "$i") + 1 ))" \
      QDRANT__CLUSTER__P2P__PORT="$(p2p_port "$i")" \
      nohup "$(cd - >/dev/null; realpath "$BIN")" "${args[@]}" > sextant.log 2>&1 & echo $! > pid)
    # wait until this peer serves REST (it listens only after joining)
    for _ in $(seq 1 120); do
      curl -sf "http://127.0.0.1:$(rest_port "$i")/readyz" >/dev/null && break
      sleep 0.25
    done
    echo "peer $i: REST http://127.0.0.1:$(rest_port "$i")  p2p http://127.0.0.1:$(p2p_port "$i")"
  done
}

status() {
  for i in $(seq 1 "$N"); do
    printf 'peer %s: ' "$i"
    curl -s "http://127.0.0.1:$(rest_port "$i")/cluster" || echo "down"
    echo
  done
}

stop() {
  for i in $(seq 1 "$N"); do
    f="$DATA/peer$i/pid"
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

case "${1:-}" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  clean) stop; sleep 1; rm -rf "$DATA" ;;
  *) echo "usage: $0 start|status|stop|clean" >&2; exit 2 ;;
esac
