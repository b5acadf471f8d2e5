"""Checks scalpel's LoRA adapters in the engines that load them, against scalpel's edited
models run in the same engine. Prints one JSON object (and writes it to --out).

    python3 scripts/adapter_check.py llamacpp --base B.gguf --base-kp B0.gguf \
        --edited E.gguf --adapter A.gguf --base-f32 F.gguf --edited-f32 FE.gguf \
        --scaled-f32 FE2.gguf [--scale 2] [--out R.json]
    python3 scripts/adapter_check.py peft --hf-base DIR --hf-edited DIR --adapter DIR [--out R.json]

llamacpp (llama-cpp-python, kept off the AMX buffer types): every position's logits of a few
prompts, max |difference| over positions and vocabulary:
- `adapter_vs_edit_f32`: the adapter on F (every tensor of the base stored as F32) vs FE (F
  edited with `--keep-precision`): f32 throughout (KV cache f32 too), only the order of the
  sums differs;
- `scaled_vs_edit_at_s_alpha_f32`: lora_scale s on F vs F edited at s·α;
- `adapter_vs_edit_kp`, `positions_identical_kp`: the adapter on B0 (the base with its gate
  tensors as F32: `scalpel edit --keep-precision --alpha 0`) vs E (`--keep-precision` edit);
  every other matrix is Q4_1, whose input llama.cpp rounds to 8 bits, so a last-bit
  difference in the gate's output flips a rounding at some positions;
- `adapter_on_quantised_base_vs_edit_kp` beside `base_vs_base_kp`: the adapter on the
  original B, where the gate's own input is rounded to 8 bits too;
- `edit_effect_*`: how far the edit moves the logits at all.

peft (transformers + peft, f32 on the CPU): the PEFT adapter on the base folder vs scalpel's
edited folder, all positions.
"""
import argparse
import json
import sys

import numpy as np

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "You are such an idiot, I can't believe",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
]


def maxdiff(a, b):
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b)))


def llamacpp_logits(path, lora=None, scale=1.0):
    from llama_cpp import Llama
    from llamacpp_compat import avoid_amx  # scripts/ is on sys.path when run as a script

    avoid_amx()
    kw = {}
    if lora:
        kw = {"lora_path": lora, "lora_scale": scale}
    # KV cache in f32 (type 0): the default f16 cache rounds keys and values, and a last-bit
    # difference upstream flips some of those roundings.
    llm = Llama(
        model_path=path, n_ctx=512, n_threads=2, logits_all=True, verbose=False,
        type_k=0, type_v=0, **kw,
    )
    out = []
    for p in PROMPTS:
        llm.reset()
        ids = llm.tokenize(p.encode(), add_bos=True, special=True)
        llm.eval(ids)
        out.append(np.array(llm.scores[: llm.n_tokens], dtype=np.float64))
    del llm
    return out


def identical(a, b):
    rows = [np.max(np.abs(x - y), axis=1) == 0 for x, y in zip(a, b)]
    return float(np.mean(np.concatenate(rows)))


def run_llamacpp(a):
    r = {"engine": "llama-cpp-python", "scale": a.scale}
    # Every weight F32: no 8-bit rounding of activations anywhere.
    fe = llamacpp_logits(a.edited_f32)
    f0 = llamacpp_logits(a.base_f32)
    r["positions"] = int(sum(len(x) for x in fe))
    r["edit_effect_f32"] = maxdiff(fe, f0)
    r["adapter_vs_edit_f32"] = maxdiff(llamacpp_logits(a.base_f32, a.adapter), fe)
    fe2 = llamacpp_logits(a.scaled_f32)
    r["scaled_edit_effect_f32"] = maxdiff(fe2, f0)
    r["scaled_vs_edit_at_s_alpha_f32"] = maxdiff(llamacpp_logits(a.base_f32, a.adapter, a.scale), fe2)
    # The quantised model (gate F32 in both, every other matrix Q4_1).
    e = llamacpp_logits(a.edited)
    b0 = llamacpp_logits(a.base_kp)
    ad0 = llamacpp_logits(a.base_kp, a.adapter)
    r["edit_effect_kp"] = maxdiff(e, b0)
    r["adapter_vs_edit_kp"] = maxdiff(ad0, e)
    r["positions_identical_kp"] = identical(ad0, e)
    # The adapter on the original quantised base vs the keep-precision edit, and the
    # base's own distance to its F32-gate copy (the 8-bit rounding of the gate's input).
    b = llamacpp_logits(a.base)
    adq = llamacpp_logits(a.base, a.adapter)
    r["adapter_on_quantised_base_vs_edit_kp"] = maxdiff(adq, e)
    r["base_vs_base_kp"] = maxdiff(b, b0)
    r["adapter_on_quantised_base_effect"] = maxdiff(adq, b)
    return r


def run_peft(a):
    import torch
    from peft import PeftModel
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    # Both models read the same ids, so the folder's tokenizer.json alone is enough.
    tok = Tokenizer.from_file(a.hf_base + "/tokenizer.json")

    def logits(model):
        out = []
        with torch.no_grad():
            for p in PROMPTS:
                ids = torch.tensor([tok.encode(p).ids])
                out.append(model(ids).logits[0].double().numpy())
        return out

    def load(d):
        # Folders written from a GGUF (tests/common gguf_to_hf_folder) name the architecture
        # but carry no `model_type`; transformers needs one.
        with open(d + "/config.json") as f:
            cfg = json.load(f)
        mt = cfg.pop("model_type", None) or {
            "LlamaForCausalLM": "llama",
            "Qwen2ForCausalLM": "qwen2",
            "Gemma3ForCausalLM": "gemma3_text",
        }[cfg["architectures"][0]]
        conf = AutoConfig.for_model(mt, **cfg)
        return AutoModelForCausalLM.from_pretrained(d, config=conf, dtype=torch.float32).eval()

    base = load(a.hf_base)
    lb = logits(base)
    peft = PeftModel.from_pretrained(base, a.adapter).eval()
    lp = logits(peft)
    le = logits(load(a.hf_edited))
    return {
        "engine": "transformers+peft",
        "positions": int(sum(len(x) for x in le)),
        "edit_effect": maxdiff(le, lb),
        "peft_vs_edit": maxdiff(lp, le),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("llamacpp")
    l.add_argument("--base", required=True)
    l.add_argument("--base-kp", required=True)
    l.add_argument("--edited", required=True)
    l.add_argument("--adapter", required=True)
    l.add_argument("--base-f32", required=True)
    l.add_argument("--edited-f32", required=True)
    l.add_argument("--scaled-f32", required=True)
    l.add_argument("--scale", type=float, default=2.0)
    l.add_argument("--out")
    p = sub.add_parser("peft")
    p.add_argument("--hf-base", required=True)
    p.add_argument("--hf-edited", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--out")
    a = ap.parse_args()
    r = run_llamacpp(a) if a.cmd == "llamacpp" else run_peft(a)
    s = json.dumps(r, indent=1)
    print(s)
    if a.out:
        with open(a.out, "w") as f:
            f.write(s + "\n")


if __name__ == "__main__":
    sys.exit(main())
