#!/usr/bin/env bash
# Scale benchmark of `castellan serve`: 1,000 connections, 100 roles, 10,000
# agents and 100,000 active agent tokens in the store. Measures the time from
# process start to the `listening` line and idle memory (VmRSS, VmHWM and
# the anonymous and file-backed parts of VmRSS from /proc/PID/status after
# IDLE_SECONDS). Then it measures how long a
# configuration reload takes on SIGHUP and on a change of the file, and how
# long a revoked token takes to reach the gateway. It also checks a few
# requests.
#
# Steps:
#   1. `cargo build --release -p castellan`, once, unless SKIP_BUILD=1.
#   2. `castellan init` in a temporary data directory, then
#      bench/scale_data.py writes castellan.toml, `castellan secret set`
#      stores one secret per connection (read from stdin), and
#      bench/scale_data.py inserts the tokens straight into the `tokens` table
#      with the token and hash format of castellan-vault.
#   3. A Python upstream on UPSTREAM_PORT responds 200 for conn-0000; every
#      other connection points at IDLE_PORT, where nothing listens and which
#      no request reaches.
#   4. `castellan serve --log-json` on AGENT_PORT and ADMIN_PORT, then the
#      measurements. Reload times come from the gateway's own log timestamps
#      ("SIGHUP received" or "configuration file changed" to "configuration
#      reloaded") and, from outside, from the time until /readyz counts the
#      agent that the reload added.
#
# Targets: idle RSS at most 32 MiB, startup and reload under 1 s.
# Everything binds 127.0.0.1. Needs python3, curl and a Rust toolchain.
#
# Usage: bash bench/scale.sh    (from anywhere; KEEP_WORK=1 keeps the data
# directory and logs; CASTELLAN=PATH with SKIP_BUILD=1 measures another
# build, such as one of an earlier commit; see bench/README.md for the
# record)
set -euo pipefail

TOKENS=${TOKENS:-100000}
IDLE_SECONDS=${IDLE_SECONDS:-5}
UPSTREAM_PORT=${UPSTREAM_PORT:-18180}
IDLE_PORT=${IDLE_PORT:-18181}
AGENT_PORT=${AGENT_PORT:-18182}
ADMIN_PORT=${ADMIN_PORT:-18183}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CASTELLAN=${CASTELLAN:-$TARGET_DIR/release/castellan}
DATA_SCRIPT=$ROOT/bench/scale_data.py

log() { printf 'scale: %s\n' "$*" >&2; }
die() {
  printf 'scale: %s\n' "$*" >&2
  exit 1
}

now() { date +%s.%N; }
elapsed_ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", (b - a) * 1000}'; }
status_kib() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

PIDS_TO_STOP=()
stop_all() {
  local pid
  for pid in "${PIDS_TO_STOP[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ ${KEEP_WORK:-0} == 1 ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}

# Waits until the JSON of /readyz has FIELD equal to VALUE, polling every
# 10 ms for at most 30 s. Prints nothing and fails on timeout.
wait_for_readyz() {
  local field=$1 value=$2
  for _ in $(seq 1 3000); do
    if curl -s "http://127.0.0.1:$ADMIN_PORT/readyz" |
      python3 -c "import json,sys; sys.exit(json.load(sys.stdin)['$field'] != $value)" 2>/dev/null; then
      return 0
    fi
    sleep 0.01
  done
  die "/readyz did not report $field = $value within 30 s; see $WORK/serve.log"
}

# Prints the milliseconds between the last log line with message FROM and the
# first later line with message TO, from the JSON log of castellan serve.
log_interval_ms() {
  python3 - "$WORK/serve.log" "$1" "$2" <<'EOF'
import datetime, json, sys
path, start, end = sys.argv[1:]
def parse(stamp):
    # RFC 3339 with up to nanoseconds; Python keeps microseconds.
    stamp = stamp.rstrip("Z")
    head, _, fraction = stamp.partition(".")
    value = datetime.datetime.fromisoformat(head)
    return value.timestamp() + float("0." + (fraction or "0"))
events = []
for line in open(path, encoding="utf-8"):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    events.append((record.get("fields", {}).get("message"), parse(record["timestamp"])))
starts = [i for i, (message, _) in enumerate(events) if message == start]
if not starts:
    sys.exit(f"no log line {start!r}")
begin = starts[-1]
for message, stamp in events[begin + 1:]:
    if message == end:
        print(f"{(stamp - events[begin][1]) * 1000:.0f}")
        sys.exit(0)
sys.exit(f"no log line {end!r} after {start!r}")
EOF
}

# Appends agent NAME to the configuration, so a reload changes the agent count.
append_agent() {
  printf '\n[agents.%s]\nowner = "bench@example.com"\nroles = ["role-001"]\n' "$1" \
    >>"$DATA/castellan.toml"
}

build() {
  log "building castellan in release mode"
  (cd "$ROOT" && cargo build --release -q -p castellan)
}

start_upstream() {
  python3 - "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 <<'EOF' &
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"ok": true}\n'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
  PIDS_TO_STOP+=($!)
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/" && return 0
    sleep 0.1
  done
  die "the upstream did not start on port $UPSTREAM_PORT; see $WORK/upstream.log"
}

prepare_data() {
  local started index name
  "$CASTELLAN" init --data-dir "$DATA" >"$WORK/init.log" 2>&1
  python3 "$DATA_SCRIPT" config "$DATA/castellan.toml" \
    --upstream-port "$UPSTREAM_PORT" --idle-port "$IDLE_PORT"
  CONFIG_BYTES=$(wc -c <"$DATA/castellan.toml")

  started=$(now)
  "$CASTELLAN" config check --data-dir "$DATA" >"$WORK/check.log" 2>&1 ||
    die "the generated castellan.toml is invalid; see $WORK/check.log"
  CHECK_MS=$(elapsed_ms "$started" "$(now)")

  log "storing 1,000 secrets with castellan secret set"
  started=$(now)
  for ((index = 0; index < 1000; index++)); do
    name=$(printf 'secret-%04d' "$index")
    head -c 24 /dev/urandom | base64 | tr -d '+/=' |
      "$CASTELLAN" secret set "$name" --data-dir "$DATA" 2>>"$WORK/init.log"
  done
  SECRETS_S=$(awk -v ms="$(elapsed_ms "$started" "$(now)")" 'BEGIN {printf "%.1f", ms / 1000}')

  log "inserting $TOKENS agent tokens"
  python3 "$DATA_SCRIPT" tokens "$DATA/castellan.db" --count "$TOKENS" \
    --token-file "$WORK/agent-token"
  AGENT_TOKEN=$(cat "$WORK/agent-token")
}

start_castellan() {
  local started
  started=$(now)
  "$CASTELLAN" serve --log-json --data-dir "$DATA" \
    --listen "127.0.0.1:$AGENT_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
  CASTELLAN_PID=$!
  PIDS_TO_STOP+=("$CASTELLAN_PID")
  for _ in $(seq 1 6000); do
    if grep -q '^listening ' "$WORK/serve.out"; then
      STARTUP_MS=$(elapsed_ms "$started" "$(now)")
      return 0
    fi
    kill -0 "$CASTELLAN_PID" 2>/dev/null || die "castellan serve exited; see $WORK/serve.log"
    sleep 0.005
  done
  die "castellan serve printed no listening line within 30 s; see $WORK/serve.log"
}

# Sends one request and fails unless the status is EXPECTED.
expect_status() {
  local expected=$1 method=$2 path=$3 token=$4 status
  status=$(curl -s -o /dev/null -w '%{http_code}' -X "$method" \
    -H "Authorization: Bearer $token" "http://127.0.0.1:$AGENT_PORT$path")
  [[ $status == "$expected" ]] || die "$method $path returned $status; expected $expected"
}

check_requests() {
  local unknown=cst_0000000000000000000000000000000000000000000000
  expect_status 200 GET /conn-0000/v1/items/42 "$AGENT_TOKEN"
  expect_status 200 GET /conn-0000/v1/status "$AGENT_TOKEN"
  expect_status 200 GET /conn-0000/v1/items/7/details "$AGENT_TOKEN"
  expect_status 403 DELETE /conn-0000/v1/items/42 "$AGENT_TOKEN"
  expect_status 403 GET /conn-0000/admin "$AGENT_TOKEN"
  expect_status 401 GET /conn-0000/v1/items/42 "$unknown"
}

measure_reloads() {
  local sent

  append_agent bench-sighup
  sent=$(now)
  kill -HUP "$CASTELLAN_PID"
  wait_for_readyz agents 10001
  SIGHUP_OUTSIDE_MS=$(elapsed_ms "$sent" "$(now)")
  SIGHUP_LOG_MS=$(log_interval_ms "SIGHUP received; reloading the configuration" \
    "configuration reloaded")

  # The gateway checks the file's modification time and size once a second,
  # so the outside time includes up to one second of waiting for that check.
  append_agent bench-file-change
  sent=$(now)
  wait_for_readyz agents 10002
  FILE_OUTSIDE_MS=$(elapsed_ms "$sent" "$(now)")
  FILE_LOG_MS=$(log_interval_ms "configuration file changed; reloading" "configuration reloaded")

  # A revoked token rebuilds the snapshot from the store: the gateway polls
  # the store's change counter every 250 ms.
  local id
  id=$(python3 -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(
    'SELECT id FROM tokens ORDER BY id LIMIT 1').fetchone()[0])" "$DATA/castellan.db")
  sent=$(now)
  "$CASTELLAN" agent token revoke "$id" --data-dir "$DATA" >/dev/null 2>>"$WORK/init.log"
  wait_for_readyz active_tokens $((TOKENS - 1))
  REVOKE_OUTSIDE_MS=$(elapsed_ms "$sent" "$(now)")
}

print_report() {
  echo
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), nproc $(nproc)"
  echo "load average at the start: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "castellan.toml: 1000 connections, 100 roles, 10000 agents, $CONFIG_BYTES bytes"
  echo "store: $TOKENS active agent tokens, 1000 secrets (castellan secret set took $SECRETS_S s)"
  echo "castellan config check: $CHECK_MS ms"
  echo
  echo "| measurement | value | target |"
  echo "| --- | --- | --- |"
  echo "| start to listening line | $STARTUP_MS ms | under 1000 ms |"
  echo "| VmRSS after ${IDLE_SECONDS} s idle | $(mib "$IDLE_RSS") MiB | at most 32 MiB |"
  echo "| VmHWM after ${IDLE_SECONDS} s idle | $(mib "$IDLE_HWM") MiB | - |"
  echo "| of the idle VmRSS: RssAnon (heap, stacks) | $(mib "$IDLE_ANON") MiB | - |"
  echo "| of the idle VmRSS: RssFile (binary and libraries) | $(mib "$IDLE_FILE") MiB | - |"
  echo "| VmRSS after requests and reloads | $(mib "$END_RSS") MiB | - |"
  echo "| VmHWM after requests and reloads | $(mib "$END_HWM") MiB | - |"
  echo "| SIGHUP reload, gateway log | $SIGHUP_LOG_MS ms | under 1000 ms |"
  echo "| SIGHUP to /readyz showing it | $SIGHUP_OUTSIDE_MS ms | - |"
  echo "| file change reload, gateway log | $FILE_LOG_MS ms | under 1000 ms |"
  echo "| file write to /readyz showing it (includes the 1 s poll) | $FILE_OUTSIDE_MS ms | - |"
  echo "| token revoke command to /readyz showing it | $REVOKE_OUTSIDE_MS ms | - |"
}

main() {
  command -v python3 >/dev/null || die "python3 is missing; install it from your distribution"
  command -v curl >/dev/null || die "curl is missing; install it from your distribution"
  [[ ${SKIP_BUILD:-0} == 1 ]] || build
  [[ -x $CASTELLAN ]] || die "$CASTELLAN is missing or not executable; build it or set CASTELLAN"
  log "measuring $CASTELLAN"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/castellan-scale.XXXXXX")
  DATA=$WORK/data
  trap stop_all EXIT
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

  start_upstream
  prepare_data
  start_castellan
  log "listening after $STARTUP_MS ms; idle for $IDLE_SECONDS s"
  sleep "$IDLE_SECONDS"
  IDLE_RSS=$(status_kib "$CASTELLAN_PID" VmRSS)
  IDLE_HWM=$(status_kib "$CASTELLAN_PID" VmHWM)
  IDLE_ANON=$(status_kib "$CASTELLAN_PID" RssAnon)
  IDLE_FILE=$(status_kib "$CASTELLAN_PID" RssFile)
  wait_for_readyz active_tokens "$TOKENS"
  check_requests
  measure_reloads
  END_RSS=$(status_kib "$CASTELLAN_PID" VmRSS)
  END_HWM=$(status_kib "$CASTELLAN_PID" VmHWM)
  print_report
}

main "$@"
