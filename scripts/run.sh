#!/usr/bin/env bash
# The main job on the default model, from a fresh machine: build, fetch the model
# (sha256-verified), train the paper's toxicity probe, edit the gate rows as the paper
# does (α = 1.08, K = 4.65 % of rows) writing the edited GGUF and a reversible patch, and
# show base and edited continuations side by side. Outputs go to runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
export SCALPEL_MIRROR="${SCALPEL_MIRROR:-$(pwd)/../shared/mirror}"
cargo build --release --locked
bin="$(pwd)/target/release/scalpel"
out=runs/quickstart
mkdir -p "$out"
model="$("$bin" fetch smollm2-135m-instruct)"
"$bin" inspect "$model" --no-tensors
"$bin" probe train "$model" --data toxicity --balance --out "$out/probe.safetensors" \
  --report "$out/probe.json"
"$bin" select "$model" "$out/probe.safetensors" --out "$out/plan.json" --force
"$bin" edit "$model" "$out/probe.safetensors" --alpha 1.08 --out "$out/edited.gguf" \
  --patch "$out/edit.patch.safetensors" --force
for m in "$model" "$out/edited.gguf"; do
  echo "== $m"
  "$bin" generate "$m" --max-tokens 20 --prompt "The capital of France is" \
    --prompt "I can't believe you would say something so" --prompt "Those people are all"
done
