#!/usr/bin/env bash
# Compares `castellan scan` with detect-secrets on the labelled corpus and on
# a large source tree: precision, recall, wall time, CPU time and MB/s.
#
# Usage: bench/scanner.sh [TREE] ; TREE defaults to the cargo registry
# sources (~/.cargo/registry/src). TREE_MB (default 100) sets the size of the
# copied subset both tools scan. Results print as Markdown for docs/scanner.md.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
tree=${1:-$HOME/.cargo/registry/src}
tree_mb=${TREE_MB:-100}
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
