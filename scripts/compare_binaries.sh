#!/usr/bin/env bash
# Behaviour unchanged? Runs two scalpel binaries on the same inputs and compares what they
# write, file by file: greedy, sampled and f32 chat generations and probes at every block
# (final norm, each MLP input, a residual) on the three families, a perplexity/KL
# evaluation, and a small `scalpel run` (probe, edited models, patches, controls, reports)
# on the default model. Files that record wall time are compared with the timings removed.
#
#   bash scripts/compare_binaries.sh OLD_BIN NEW_BIN OUT_DIR [--no-run]
#
# Needs SCALPEL_MODEL, SCALPEL_GEMMA3_MODEL, SCALPEL_QWEN2_MODEL and SCALPEL_MIRROR (as
# scripts/test.sh sets them). Each binary gets its own empty SCALPEL_CACHE, so nothing is
# read from an earlier run. Prints one line per differing file and a summary; exit 1 when
# anything differs.
set -uo pipefail
old=$1 new=$2 out=$3
with_run=1
[ "${4:-}" = --no-run ] && with_run=0
: "${SCALPEL_MODEL:?}" "${SCALPEL_GEMMA3_MODEL:?}" "${SCALPEL_QWEN2_MODEL:?}" "${SCALPEL_MIRROR:?}"

outputs() {
    local B=$1 O=$2
    rm -rf "$O"
    mkdir -p "$O"
    export SCALPEL_CACHE="$O/cache"
    # 8 texts in 3 numbered copies: the held-out split needs more than 4 of each class.
    for n in 1 2 3; do
        printf '0\tThe weather is lovely today and I feel great.\n0\tThank you so much for helping me.\n0\tWhat a wonderful kind person you are.\n0\tI enjoyed the concert last night.\n1\tYou are a stupid worthless idiot.\n1\tShut up, nobody cares about you, loser.\n1\tI hate you and everyone like you.\n1\tGo away you disgusting moron.\n' | sed "s/\\.\\?\$/ ($n)./" >>"$O/d.tsv"
    done
    local P=(-p "The capital of France is" -p "Once upon a time, in a small village at the edge of a great forest, there lived" -p "def f(n):")
    for m in sm ge qw; do
        case $m in
        sm) M=$SCALPEL_MODEL ;;
        ge) M=$SCALPEL_GEMMA3_MODEL ;;
        qw) M=$SCALPEL_QWEN2_MODEL ;;
        esac
        "$B" generate "$M" "${P[@]}" --max-tokens 12 --json >"$O/$m.gen_greedy.jsonl" 2>/dev/null
        "$B" generate "$M" "${P[@]}" --max-tokens 12 --temperature 0.9 --seed 7 --json >"$O/$m.gen_sample.jsonl" 2>/dev/null
        "$B" generate "$M" "${P[@]}" --max-tokens 8 --precision f32 --chat --json >"$O/$m.gen_f32chat.jsonl" 2>/dev/null
        "$B" probe train "$M" --data-file "$O/d.tsv" --layer final,mlp:all,residual:1 --no-cache --out "$O/$m.probe.safetensors" >"$O/$m.probe.log" 2>&1
    done
    "$B" eval "$SCALPEL_MODEL" --baseline "$SCALPEL_MODEL" --suite ppl,kl --ppl-windows 2 --ppl-window 128 --kl-windows 2 --kl-window 64 --benign-prompts 4 --no-cache --out "$O/eval_sm" >"$O/eval_sm.log" 2>&1
    if [ $with_run = 1 ]; then
        # 30 + 30 Davidson tweets (neither / hate) from the toxicity asset: a probe in seconds.
        local csv
        csv=$("$B" fetch davidson-labeled-data | tail -1)
        python3 - "$csv" "$O/small.tsv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], encoding="utf-8")))
out, n = [], {"0": 0, "1": 0}
for r in rows[1:]:
    t = r[-1].replace("\t", " ").replace("\n", " ").strip()
    label = {"2": "0", "0": "1"}.get(r[5])
    if label and n[label] < 30:
        out.append(label + "\t" + t)
        n[label] += 1
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
        "$B" run "$SCALPEL_MODEL" --behaviour detox --data-file "$O/small.tsv" --out "$O/run" --limit 6 --toxigen-per-group 1 --ppl-windows 1 --kl-windows 1 --suites rtp,ppl,kl --no-cache >"$O/run.log" 2>&1
    fi
    rm -rf "$O/cache"
}

# A file with the output folder written as OUT, and without wall-clock fields (JSON) or the
# lines that state timings (Markdown).
untimed() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
path, prefix = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
if path.endswith((".json", ".md", ".toml")):
    s = data.decode().replace(prefix + "/", "OUT/")
    if path.endswith(".json"):
        def strip(o):
            if isinstance(o, dict):
                return {k: strip(v) for k, v in o.items() if not any(w in k for w in ("secs", "per_sec", "throughput", "wall"))}
            if isinstance(o, list):
                return [strip(x) for x in o]
            return o
        s = json.dumps(strip(json.loads(s)), sort_keys=True)
    if path.endswith(".md"):
        s = "\n".join(l for l in s.split("\n") if not re.search(r" s of generation|wall \d+ s|wall time|Where the time went", l))
    data = s.encode()
sys.stdout.buffer.write(data)
PY
}

outputs "$old" "$out/old"
outputs "$new" "$out/new"
same=0 diff=0
while IFS= read -r f; do
    case $f in *.log) continue ;; esac
    if cmp -s "$out/old/$f" "$out/new/$f" ||
        cmp -s <(untimed "$out/old/$f" "$out/old") <(untimed "$out/new/$f" "$out/new"); then
        same=$((same + 1))
    else
        echo "differs: $f"
        diff=$((diff + 1))
    fi
done < <(cd "$out/old" && find . -type f | sort)
echo "$same files the same, $diff different ($(cd "$out/old" && find . -type f -name '*.gguf' | wc -l) edited models, $(cd "$out/old" && find . -type f -name '*probe*.safetensors' | wc -l) probes)"
[ $diff = 0 ]
