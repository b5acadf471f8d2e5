#!/usr/bin/env bash
# Runtime throughput of scalpel next to llama.cpp on the same file and machine, in one run:
# `scalpel bench` (prompt, batched forward with hidden states, greedy generation, for each
# weight precision) and llama.cpp's greedy single-stream speed (llama-cpp-python, built
# from source by pip on first use, ~8 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin="$(pwd)/target/release/scalpel"
model="${1:-$("$bin" fetch smollm2-135m-instruct)}"
python3 -c 'import llama_cpp' 2>/dev/null || python3 -m pip install -q 'llama-cpp-python==0.3.36'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" bench "$model" --runs 3 --gen-tokens 128
peer=$(python3 bench/llamacpp_gen.py "$model" 128 3)
echo "llama.cpp (llama-cpp-python 0.3.36, 2 threads): $peer"
ours=$("$bin" bench "$model" --runs 3 --gen-tokens 128 --precision native --json)
python3 - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r = ours["greedy_b1_tok_s"] / peer["greedy_b1_tok_s"]
print(f"greedy single stream: scalpel native {ours['greedy_b1_tok_s']:.1f} tok/s, "
      f"llama.cpp {peer['greedy_b1_tok_s']:.1f} tok/s, ratio {r:.2f}")
PY
