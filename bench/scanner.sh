#!/usr/bin/env bash
# Compares `castellan scan` with detect-secrets on the labelled corpus and on
# a large source tree: precision, recall, wall time, CPU time and MB/s.
#
# Usage: bench/scanner.sh [TREE] ; TREE defaults to the cargo registry
# sources (~/.cargo/registry/src). TREE_MB (default 100) sets the size of the
# copied subset both tools scan. RUNS (default 3) sets how many more times
# `castellan scan` is timed on the subset, because its CPU time changes with
# other load on the machine. Results print as Markdown for docs/scanner.md.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
tree=${1:-$HOME/.cargo/registry/src}
tree_mb=${TREE_MB:-100}
runs=${RUNS:-3}
detect_secrets_version=1.5.0
work=$(mktemp -d -t castellan-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "building castellan (release)" >&2
cargo build --release -q -p castellan --manifest-path "$root/Cargo.toml"
cargo build --release -q -p castellan-scan --example throughput --manifest-path "$root/Cargo.toml"

echo "installing detect-secrets $detect_secrets_version in a virtual environment" >&2
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "detect-secrets==$detect_secrets_version"

python3 "$root/bench/scanner_compare.py" \
  --castellan "$root/target/release/castellan" \
  --throughput "$root/target/release/examples/throughput" \
  --detect-secrets "$work/venv/bin/detect-secrets" \
  --corpus "$root/crates/castellan-scan/tests/corpus" \
  --tree "$tree" --tree-mb "$tree_mb" --work "$work"

# Times `castellan scan --format json .` in "$work/tree" and writes wall,
# user and system seconds to "$work/time.txt". Exit status 1 only means
# findings; 2 is an error.
time_castellan() {
  local TIMEFORMAT='%R %U %S' status=0
  { time (cd "$work/tree" && "$root/target/release/castellan" scan --format json . \
    >/dev/null 2>&1); } 2>"$work/time.txt" || status=$?
  if [ "$status" -gt 1 ]; then
    echo "castellan scan failed with exit status $status in $work/tree" >&2
    return 1
  fi
}

tree_bytes=$(find "$work/tree" -type f -printf '%s\n' | awk '{ total += $1 } END { print total }')
echo
awk -v bytes="$tree_bytes" -v runs="$runs" \
  'BEGIN { printf "castellan scan on the same %.1f MB, %d more runs:\n", bytes / 1e6, runs }'
echo
echo "| run | wall s | CPU s (user+sys) | MB per CPU-second |"
echo "|---|---|---|---|"
for run in $(seq "$runs"); do
  time_castellan
  read -r wall user sys <"$work/time.txt"
  awk -v run="$run" -v wall="$wall" -v user="$user" -v sys="$sys" -v bytes="$tree_bytes" \
    'BEGIN { cpu = user + sys; printf "| %d | %.2f | %.2f | %.1f |\n", run, wall, cpu, bytes / 1e6 / cpu }'
done
