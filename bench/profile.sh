#!/usr/bin/env bash
# Where scalpel's time goes in the workloads where it trails a peer: `perf record` (software
# clock: these VMs expose no hardware counters, `perf stat -e instructions true` says
# "not supported") on single-stream generation and on the edit of a synthetic 0.5B f16
# model, top symbols of each. Needs perf (apt-get install linux-perf) and bench/.venv
# (bench/run.sh makes it).
#
#   bash bench/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "profile: $*" >&2; exit 1; }
command -v perf >/dev/null || die "perf not found (apt-get install linux-perf)"
[ -x bench/.venv/bin/python ] || die "run bench/run.sh first (it makes bench/.venv)"
cargo build --release --locked
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$(pwd)/$target" ;; esac
bin="$target/release/scalpel"
model=$("$bin" fetch)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
top() { perf report -i "$1" --stdio --no-children --sort symbol 2>/dev/null | grep -E '^ +[0-9.]+%' | head -n "${2:-8}" || true; }
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== greedy generation, 1 prompt x 128 tokens, native weights, 2 threads"
echo "Once upon a time" > "$work/one.txt"
RAYON_NUM_THREADS=2 perf record -q -e cpu-clock -o "$work/gen.data" -- "$bin" bench "$model" \
    --generate "$work/one.txt" --gen-tokens 128 --batch-size 1 --runs 1 >/dev/null
top "$work/gen.data"
echo "== scalpel edit of a synthetic 0.5B-parameter f16 safetensors model"
bench/.venv/bin/python - "$work" <<'PY'
import sys
sys.path.insert(0, "bench")
import harness
harness.write_synthetic(f"{sys.argv[1]}/model", harness.SHAPES["0.5B"])
harness.write_probe(f"{sys.argv[1]}/probe.safetensors", harness.SHAPES["0.5B"][0])
PY
RAYON_NUM_THREADS=2 perf record -q -e cpu-clock -o "$work/edit.data" -- "$bin" edit "$work/model" \
    "$work/probe.safetensors" --out "$work/edited" | tail -1
top "$work/edit.data" 10
