#!/usr/bin/env bash
# The phone and C faces against the real library (called by scripts/test.sh, which installs the
# tools; runnable alone once they are there):
#   1. the committed bindings match freshly generated ones (Kotlin, Swift, Python, the C header)
#   2. C against the static library and the generated header, under valgrind (no leaks, no errors)
#   3. Python (pytest) against the shared library: local run, cancel, policy, a real coordinator
#   4. Kotlin on the JVM (kotlinc, JNA, kotlinx-coroutines) against the shared library: the same flow
#   5. Python and Kotlin again against the phone's library as shipped (scripts/phone-library.sh:
#      size-optimised, panic = "abort", no unwind tables)
# Swift is generated but not compiled: there is no Swift toolchain on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/icn-mesh/target}
venv=${ICN_VENV:-$HOME/.cache/icn-mesh/venv}
kotlin=${ICN_KOTLIN:-$HOME/.cache/icn-mesh/kotlin/node_modules/kotlin-compiler}
lib=$CARGO_TARGET_DIR/debug
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- bindings are up to date"
scripts/bindings.sh --check
cargo build --locked -q -p icn-mesh-coordinator --bin icn

echo "-- C: static library + generated header, under valgrind"
gcc -std=c11 -Wall -Wextra -Werror -g -I bindings/c tests/c/test_icn_mesh.c "$lib/libicn_mesh.a" \
    -lpthread -ldl -lm -o "$work/test_c"
valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=3 \
    "$work/test_c" "$work/c-node" examples/jobs/echo.wasm

# The Python and Kotlin tests against the libicn_mesh.so in directory $1.
python_tests() {
    ICN_ROOT=$PWD ICN_BIN=$lib/icn ICN_LIB=$1/libicn_mesh.so \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/bindings/test_python.py
}
kotlin_tests() {
    rm -rf "$work/kotlin" && mkdir -p "$work/kotlin"
    java -Djna.library.path="$1" -cp "$work/kotlin-test.jar:$classpath:$kotlin/lib/kotlin-stdlib.jar" \
        KotlinTestKt "$PWD" "$lib/icn" "$work/kotlin"
}

echo "-- Python: pytest against libicn_mesh.so"
python_tests "$lib"

echo "-- Kotlin on the JVM: kotlinc + JNA + kotlinx-coroutines against libicn_mesh.so"
classpath=/usr/share/java/jna.jar:$kotlin/lib/kotlinx-coroutines-core-jvm.jar
"$kotlin/bin/kotlinc" -nowarn -cp "$classpath" bindings/kotlin/uniffi/icn_mesh/icn_mesh.kt \
    tests/bindings/KotlinTest.kt -d "$work/kotlin-test.jar" 2>&1 | { grep -v '^warning' || true; }
kotlin_tests "$lib"

echo "-- Python and Kotlin against the phone's library as shipped (scripts/phone-library.sh)"
phone=$(dirname "$(scripts/phone-library.sh)")
python_tests "$phone"
kotlin_tests "$phone"
