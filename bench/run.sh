#!/usr/bin/env bash
# scalpel next to its peers (transformers, llama.cpp, cp) on the default model, in one run:
# activation collection, generation, the surgery, and the surgery on synthetic models of
# growing size. Prints the tables and writes bench/results/{results.json,results.md,scaling.svg}.
#
#   bash bench/run.sh            # the issue's sizes (512 texts, 64 prompts, 0.1-3B models)
#   bash bench/run.sh --quick    # 128 texts, 32 prompts, 2 runs, 0.1B and 0.5B models
#   bash bench/run.sh --quick --runs 3 --sizes 0.1B,0.5B,1B,3B   # the README's table:
#                                # 34 min at load 5-11 on 2 cores; the full run is longer
#   bash bench/run.sh --sections collect,generate --runs 5
#   bash bench/run.sh --edit-only --runs 5 --sizes 0.1B,0.5B   # edit vs cp only, no peers,
#                                # no venv (system python3): GGUF default model + HF folders
#   bash bench/run.sh --edit-only --baseline-bin OLD/scalpel    # and an older build beside it
#
# The peers go into a throw-away virtual environment, bench/.venv (reused when it already
# has them): torch and transformers (~5.4 GB, ~2 min) and llama-cpp-python, which pip
# builds from source (~8 min). SCALPEL_BENCH_VENV=/path/to/venv uses an existing one
# instead (it must have the packages of bench/requirements.txt; nothing is installed).
#
# Instruction sets (docs/cpu-support.md): --isa avx512,avx2 measures scalpel's kernels on
# each (SCALPEL_ISA), --precisions native,int8-activations its exact and 8-bit-input paths:
#   bash bench/run.sh --sections collect,generate --isa avx512,avx2
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
die() { echo "bench: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup.rs)"
command -v python3 >/dev/null || die "python3 not found"
cargo build --release --locked || die "cargo build failed"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
bin="$target/release/scalpel"
venv="$root/bench/.venv"
if [ "${1:-}" = --edit-only ]; then
    # `scalpel edit` next to `cp` (and --baseline-bin) on the default GGUF and synthetic HF
    # folders: the standard library is enough, so no peers are installed.
    shift
    exec python3 bench/harness.py --bin "$bin" --sections edit,scaling --no-transformers "$@"
fi
if [ -n "${SCALPEL_BENCH_VENV:-}" ]; then
    venv="$SCALPEL_BENCH_VENV"
    "$venv/bin/python" -c 'import torch, transformers, llama_cpp, numpy' \
        || die "SCALPEL_BENCH_VENV=$venv lacks the peers (torch, transformers, llama_cpp, numpy)"
elif ! "$venv/bin/python" -c 'import torch, transformers, gguf, accelerate, llama_cpp, numpy' 2>/dev/null; then
    echo "bench: installing the peers into bench/.venv (torch ~5.4 GB; llama-cpp-python builds from source, ~8 min)" >&2
    python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install -q --upgrade pip || die "pip upgrade failed"
    "$venv/bin/python" -m pip install -q -r bench/requirements.txt \
        || die "installing bench/requirements.txt failed (see pip's message above)"
fi
exec "$venv/bin/python" bench/harness.py --bin "$bin" "$@"
