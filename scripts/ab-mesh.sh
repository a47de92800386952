#!/usr/bin/env bash
# Alternating A/B runs of the mesh bench for two `icn` binaries, one line per run.
#
#     scripts/ab-mesh.sh OLD_ICN NEW_ICN ROUNDS MODE [--quick]     (MODE: latency | throughput)
#
# This machine's speed drifts by up to 1.5x within minutes, more than most changes; runs of one
# binary after the other compare spells, not binaries. So the two binaries take turns, ROUNDS times
# each, in the same bench process image: the bench starts its mesh from `target/release/icn`
# (`CARGO_BIN_EXE_icn`), which this script swaps before each run and puts back at the end.
# Build the bench first (`cargo bench -p icn-mesh-coordinator --bench mesh --no-run`); keep copies
# of the binaries outside the target directory, since a build overwrites `target/release/icn`.
# Build both sides the same way: the `icn` that `cargo bench` builds is not the one `cargo build
# --release --bin icn` builds (the bench's dev-dependencies unify other features into the shared
# crates; here the two differed by 400 KB), so take each from `cargo bench --no-run`.
# BENCH=path names the bench binary when the newest `deps/mesh-*` is not it (`cargo test` builds
# one of that name too).
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,4p' "$0" >&2
    exit 2
fi
old=$1 new=$2 rounds=$3 mode=$4 quick=${5:-}
target=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/release
bench=${BENCH:-$(ls -t "$target"/deps/mesh-* | grep -v '\.d$' | head -1)}
saved=$(mktemp)
cp "$target/icn" "$saved"
trap 'cp "$saved" "$target/icn"; rm -f "$saved"' EXIT
for _ in $(seq "$rounds"); do
    for side in A B; do
        if [ $side = A ]; then cp "$old" "$target/icn"; else cp "$new" "$target/icn"; fi
        out=$("$bench" "$mode" $quick 2>&1)
        if [ "$mode" = latency ]; then
            echo "$side $(echo "$out" | awk '/sum of the parts/{s=$5} /^p50/{p=$2; r=$3} /^p99/{q=$2; t=$3}
                /^coordinator /{c=$2} /^4 executors together/{e=$4}
                END{printf "parts %s µs  p50 %s µs (%s)  p99 %s µs (%s)  CPU/job coord %s exec %s µs", s, p, r, q, t, c, e}')"
        else
            echo "$side $(echo "$out" | awk '/jobs completed/{j=$NF} /coordinator \(/{c=$NF} /executors together/{e=$NF}
                /this machine now/{v=$NF}
                END{printf "%s jobs/s  CPU per job: coordinator %s µs, executors %s µs  (ed25519 verify %s µs)", j, c, e, v}')"
        fi
    done
done
