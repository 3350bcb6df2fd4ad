#!/usr/bin/env bash
# Request latency while `castellan serve` reloads, at the scale of
# bench/scale.sh: 1,000 connections, 10,000 agents and 100,000 tokens.
#
# Needs the data directory that `KEEP_WORK=1 bash bench/scale.sh` keeps.
# It starts the bench_upstream example on that configuration's upstream
# port. For each mode it starts the gateway on a copy of the directory and
# waits 2 s. Then it runs `wrk -t 1 -c 2 -d 12s`, pinned to the last core,
# with the token of agent-00000, while it does one of:
#   none    nothing, for comparison;
#   hup     three SIGHUPs, 3 s apart;
#   revoke  three `castellan agent token revoke` commands, 3 s apart.
# A reload or revocation that holds up requests shows in the p99 and the
# maximum latency. Everything binds 127.0.0.1.
#
# Usage: bash bench/reloads.sh SCALE_WORK_DIR [MODE...]
#   CASTELLAN=PATH measures another build (default target/release/castellan).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CASTELLAN=${CASTELLAN:-$TARGET_DIR/release/castellan}
UPSTREAM=$TARGET_DIR/release/examples/bench_upstream
UPSTREAM_PORT=${UPSTREAM_PORT:-18180}
AGENT_PORT=${AGENT_PORT:-18182}
ADMIN_PORT=${ADMIN_PORT:-18183}
REQUEST_PATH=/conn-0000/v1/items/42

die() {
  printf 'reloads: %s\n' "$*" >&2
  exit 1
}

[[ $# -ge 1 ]] || die "usage: bash bench/reloads.sh SCALE_WORK_DIR [none|hup|revoke...]"
KEPT=$1
shift
if [[ $# -ge 1 ]]; then
  MODES=("$@")
else
  MODES=(none hup revoke)
fi
[[ -d $KEPT/data && -f $KEPT/agent-token ]] ||
  die "$KEPT has no data/ or agent-token; run KEEP_WORK=1 bash bench/scale.sh first"
[[ -x $CASTELLAN ]] || die "$CASTELLAN is missing; build it or set CASTELLAN"
[[ -x $UPSTREAM ]] ||
  die "$UPSTREAM is missing; run cargo build --release -p castellan-gateway --example bench_upstream"
command -v wrk >/dev/null || die "wrk is missing; install it (Debian: apt-get install wrk)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/castellan-reloads.XXXXXX")
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap stop_all EXIT

"$UPSTREAM" "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
TOKEN=$(cat "$KEPT/agent-token")
LAST_CORE=$(($(nproc) - 1))

run_mode() {
  local mode=$1 data=$WORK/data-$1 pid actions=
  cp -r "$KEPT/data" "$data"
  "$CASTELLAN" serve --data-dir "$data" --listen "127.0.0.1:$AGENT_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" >"$WORK/$mode.out" 2>"$WORK/$mode.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 3000); do
    grep -q '^listening' "$WORK/$mode.out" && break
    kill -0 "$pid" 2>/dev/null || die "castellan serve exited; see $WORK/$mode.log"
    sleep 0.01
  done
  grep -q '^listening' "$WORK/$mode.out" ||
    die "castellan serve printed no listening line within 30 s; see $WORK/$mode.log"
  sleep 2

  case $mode in
    none) ;;
    hup)
      (for _ in 1 2 3; do sleep 3; kill -HUP "$pid"; done) &
      actions=$!
      PIDS+=("$actions")
      ;;
    revoke)
      local ids
      ids=$(python3 -c "import sqlite3, sys; print(' '.join(row[0] for row in sqlite3.connect(sys.argv[1]).execute('SELECT id FROM tokens WHERE revoked_ms IS NULL AND canary = 0 AND agent != \'agent-00000\' ORDER BY id LIMIT 3')))" "$data/castellan.db")
      (for id in $ids; do
        sleep 3
        "$CASTELLAN" agent token revoke "$id" --data-dir "$data" >/dev/null 2>&1
      done) &
      actions=$!
      PIDS+=("$actions")
      ;;
    *) die "unknown mode $mode; use none, hup or revoke" ;;
  esac

  printf '%-7s ' "$mode"
  taskset -c "$LAST_CORE" wrk -t 1 -c 2 -d 12s --latency \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$AGENT_PORT$REQUEST_PATH" |
    awk '/^    Latency/ {avg = $2; max = $4} / 99%/ {p99 = $2} /Requests\/sec/ {rps = $2}
      /Non-2xx/ {failed = $NF} /Socket errors/ {errors = $0}
      END {printf "req/s %s  avg %s  p99 %s  max %s  non-2xx %s%s", rps, avg, p99, max,
        failed + 0, errors ? "  " errors : ""}'
  [[ -z $actions ]] || wait "$actions"
  printf '  reloads logged %s, active tokens %s\n' \
    "$(grep -c 'configuration reloaded' "$WORK/$mode.log" || true)" \
    "$(curl -s "http://127.0.0.1:$ADMIN_PORT/readyz" | python3 -c 'import json, sys; print(json.load(sys.stdin)["active_tokens"])')"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), nproc $(nproc)"
echo "castellan: $CASTELLAN"
for mode in "${MODES[@]}"; do
  run_mode "$mode"
done
