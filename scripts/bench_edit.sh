#!/usr/bin/env bash
# Wall time and peak memory of `scalpel edit` on a model, next to a plain `cp` of the same
# file in the same run (page cache warm for both: the model is read once first).
#
#   scripts/bench_edit.sh MODEL.gguf PROBE.safetensors [extra edit args...]
#
# Prints: cp wall time; edit wall time, peak RSS (GNU time's max RSS, = VmHWM) and its
# summary; the size of the largest tensor, for the "peak beyond the largest tensor" budget.
set -euo pipefail
model=$1; probe=$2; shift 2
bin=${SCALPEL_BIN:-${CARGO_TARGET_DIR:-target}/release/scalpel}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cat "$model" >/dev/null
t0=$(date +%s.%N); cp "$model" "$work/copy.gguf"; sync "$work/copy.gguf"; t1=$(date +%s.%N)
echo "cp:   $(echo "$t1 - $t0" | bc) s"
t0=$(date +%s.%N)
/usr/bin/time -f "edit: max RSS %M KiB, wall %e s" "$bin" edit "$model" "$probe" \
    --out "$work/edited.gguf" --patch "$work/edited.patch" "$@"
t1=$(date +%s.%N)
echo "edit: $(echo "$t1 - $t0" | bc) s including process start"
"$bin" inspect "$model" --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
t = max(s["tensors"], key=lambda t: t.get("bytes", 0))
print("largest tensor:", t["name"], t.get("bytes", "?"), "bytes")' 2>/dev/null || true
