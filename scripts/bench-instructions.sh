#!/usr/bin/env bash
# Sandbox overhead in instructions, not seconds: runs the sieve (N = 2e6, CPU-bound) and sha256 of
# 1 MiB (I/O-bound) once per variant under callgrind and prints each total and its ratio to bare
# wasmi (one call, all the fuel). Bar: sandbox10k / raw <= 1.05 for both jobs. Instruction counts repeat exactly for
# the same binary and input, whatever else the machine is doing, so this is the figure to gate on.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/icn-mesh/target}
command -v valgrind >/dev/null || { SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo; $SUDO apt-get install -y -qq valgrind >/dev/null; }
cargo bench --locked -p icn-mesh-core --bench sandbox --no-run 2>/dev/null
bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/sandbox-* | grep -v '\.d$' | head -n 1)
# The bench reads the example modules from this checkout (as `cargo bench` would tell it), not from
# whichever checkout built the binary.
export CARGO_MANIFEST_DIR=$PWD/core
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A total
variants="raw raw10k sandbox10k sandbox4m sha-raw sha-raw10k sha-sandbox10k sha-sandbox4m"
for variant in $variants; do
  valgrind --tool=callgrind --callgrind-out-file="$tmp/$variant.out" "$bin" --only "$variant" >/dev/null 2>"$tmp/$variant.err"
  total[$variant]=$(grep -E '^summary:' "$tmp/$variant.out" | awk '{print $2}')
done
printf '%-16s %16s %8s\n' variant instructions "vs raw"
for variant in $variants; do
  base=raw; [[ $variant == sha-* ]] && base=sha-raw
  awk -v v="$variant" -v n="${total[$variant]}" -v b="${total[$base]}" 'BEGIN { printf "%-16s %16d %8.4f\n", v, n, n / b }'
done
# The gate: what slicing costs, sandbox included, stays within 5% of one bare call.
for variant in sandbox10k sha-sandbox10k; do
  base=raw; [[ $variant == sha-* ]] && base=sha-raw
  if ! awk -v n="${total[$variant]}" -v b="${total[$base]}" 'BEGIN { exit !(n / b <= 1.05) }'; then
    echo "error: $variant uses more than 1.05x the instructions of bare wasmi" >&2
    exit 1
  fi
done
