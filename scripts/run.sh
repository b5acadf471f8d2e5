#!/usr/bin/env bash
# The main job on the default model, from a fresh machine: build, fetch the model
# (sha256-verified), then `scalpel run`: train the paper's toxicity probe (final norm,
# balanced Davidson, epoch 9), edit the gate rows as the paper does (W[1], α = 1.08,
# K = 4.65 % of rows), write the edited GGUF and a reversible patch, and evaluate the base,
# the edited model and two controls (a random direction of the same norm in the same rows;
# the real direction in random rows) on RealToxicityPrompts and ToxiGen subsets, WikiText-2
# perplexity and KL. The report lands in runs/detox/summary.md; extra arguments go to
# `scalpel run` (e.g. --full for the paper's whole protocol, --alpha 4, --config run.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
export SCALPEL_MIRROR="${SCALPEL_MIRROR:-$(pwd)/../shared/mirror}"
cargo build --release --locked
bin="$(pwd)/target/release/scalpel"
model="$("$bin" fetch smollm2-135m-instruct)"
"$bin" inspect "$model" --no-tensors
"$bin" run "$model" --out runs/detox "$@"
cat runs/detox/summary.md
