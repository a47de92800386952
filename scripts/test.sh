#!/usr/bin/env bash
# Every test of icn-mesh, from a fresh machine: installs what the tests need, then runs
#   1. the example jobs rebuilt from source and compared with the committed .wasm
#   2. cargo fmt --check and clippy -D warnings
#   3. the whole test suite (unit, integration, multi-process, CLI), and the records checked by
#      independent IPLD implementations (Python)
#   4. the bindings: regenerated and compared; C (valgrind), Python (pytest) and Kotlin (JVM) tests
#      against the real library (scripts/test-bindings.sh)
#   5. each fuzz target for a bounded time (FUZZ_SECONDS, default 60)
#   6. the sandbox's overhead counted in instructions under callgrind, gated at 1.05x bare wasmi
#   7. the benchmarks in --quick mode, so they stay runnable (wall-time figures are printed, not gated)
# Exits non-zero on the first failure. Nothing is skipped: a missing tool is installed, not ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/icn-mesh/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}

step() { printf '\n==== %s\n' "$*"; }

step "install tools"
need_apt=()
command -v clang-14 >/dev/null || need_apt+=(clang-14)
[ -x /usr/lib/llvm-14/bin/wasm-ld ] || need_apt+=(lld-14)
command -v wat2wasm >/dev/null || need_apt+=(wabt)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v valgrind >/dev/null || need_apt+=(valgrind)
command -v java >/dev/null || need_apt+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/jna.jar ] || need_apt+=(libjna-java)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
kotlin_home=$HOME/.cache/icn-mesh/kotlin
[ -x "$kotlin_home/node_modules/kotlin-compiler/bin/kotlinc" ] \
  || (mkdir -p "$kotlin_home" && cd "$kotlin_home" && npm install --silent --no-audit --no-fund kotlin-compiler)
venv=${ICN_VENV:-$HOME/.cache/icn-mesh/venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import dag_cbor, multiformats, cryptography, pytest' 2>/dev/null \
  || "$venv/bin/pip" install -q dag-cbor==0.3.3 multiformats==0.3.1 cryptography pytest

step "example jobs are reproducible"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/build-examples.sh "$tmp"
for built in "$tmp"/*.wasm; do
  committed=examples/jobs/$(basename "$built")
  if ! cmp -s "$built" "$committed"; then
    echo "error: $committed differs from a fresh build; run scripts/build-examples.sh and commit" >&2
    exit 1
  fi
done
echo "all $(ls "$tmp"/*.wasm | wc -l) example modules match"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "records read by independent IPLD tools (Python dag-cbor, multiformats, cryptography)"
"$venv/bin/python" tests/ipld/check_records.py "$CARGO_TARGET_DIR/debug/icn" "$PWD"

step "bindings: C (valgrind), Python (pytest), Kotlin (JVM) against the real library"
scripts/test-bindings.sh

step "fuzz (${FUZZ_SECONDS}s per target)"
(
  cd fuzz
  export CARGO_TARGET_DIR=$CARGO_TARGET_DIR/fuzz
  for target in spec_json record_decode module_admission; do
    mkdir -p "corpus/$target"
    case $target in
      module_admission) cp ../examples/jobs/*.wasm "corpus/$target/" ;;
      spec_json) cp ../examples/specs/*.json ../core/tests/fixtures/*.json "corpus/$target/" ;;
    esac
    log="$tmp/fuzz-$target.log"
    if ! cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "error: fuzz target $target failed; the input is in fuzz/artifacts/$target" >&2
      exit 1
    fi
    echo "$target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
  done
)

step "sandbox overhead in instructions (callgrind; gated at 1.05x bare wasmi)"
scripts/bench-instructions.sh

step "benchmarks (quick mode: they must run; figures are for reading, not gating)"
cargo bench --locked -p icn-mesh-core --bench sandbox --bench records -- --quick
cargo bench --locked -p icn-mesh-coordinator --bench startup -- --quick
cargo bench --locked -p icn-mesh-coordinator --bench mesh -- --quick
cargo bench --locked -p icn-mesh-ffi --bench device -- --quick
scripts/library-size.sh

echo
echo "all tests passed"
