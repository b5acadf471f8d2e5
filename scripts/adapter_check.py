"""Checks scalpel's LoRA adapters in the engines that load them, against scalpel's edited
models run in the same engine. Prints one JSON object (and writes it to --out).

    python3 scripts/adapter_check.py llamacpp --base B.gguf --base-kp B0.gguf \
        --edited E.gguf --adapter A.gguf [--scaled E2.gguf --scale 2] [--out R.json]
    python3 scripts/adapter_check.py peft --hf-base DIR --hf-edited DIR --adapter DIR [--out R.json]

llamacpp (llama-cpp-python, kept off the AMX buffer types): every position's logits of a few
prompts for
- `adapter_vs_edit`: the adapter on B0 (the base with its gate tensors stored as F32, i.e.
  `scalpel edit --keep-precision --alpha 0`) vs E (`--keep-precision` edit): both multiply
  the same F32 gate by the same 8-bit-free path, so only the order of the f32 sums differs;
- `adapter_on_quantised_base_vs_edit`: the adapter on the original B vs E, and beside it
  `base_vs_base_kp` (B vs B0), the part that comes from llama.cpp rounding the gate's input
  to 8 bits for the quantised gate and not for the F32 one;
- `scaled_vs_edit_at_s_alpha`: lora_scale s on B0 vs the keep-precision edit made at s·α;
- `edit_effect`: E vs B0, how far the edit moves the logits at all.

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
    llm = Llama(model_path=path, n_ctx=512, n_threads=2, logits_all=True, verbose=False, **kw)
    out = []
    for p in PROMPTS:
        llm.reset()
        ids = llm.tokenize(p.encode(), add_bos=True, special=True)
        llm.eval(ids)
        out.append(np.array(llm.scores[: llm.n_tokens], dtype=np.float64))
    del llm
    return out


def run_llamacpp(a):
    e = llamacpp_logits(a.edited)
    b0 = llamacpp_logits(a.base_kp)
    ad0 = llamacpp_logits(a.base_kp, a.adapter)
    b = llamacpp_logits(a.base)
    adq = llamacpp_logits(a.base, a.adapter)
    r = {
        "engine": "llama-cpp-python",
        "positions": int(sum(len(x) for x in e)),
        "edit_effect": maxdiff(e, b0),
        "adapter_vs_edit": maxdiff(ad0, e),
        "adapter_on_quantised_base_vs_edit": maxdiff(adq, e),
        "base_vs_base_kp": maxdiff(b, b0),
        "adapter_on_quantised_base_effect": maxdiff(adq, b),
    }
    if a.scaled:
        e2 = llamacpp_logits(a.scaled)
        ads = llamacpp_logits(a.base_kp, a.adapter, a.scale)
        r["scale"] = a.scale
        r["scaled_edit_effect"] = maxdiff(e2, b0)
        r["scaled_vs_edit_at_s_alpha"] = maxdiff(ads, e2)
    return r


def run_peft(a):
    import torch
    from peft import PeftModel
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    # Both models read the same ids, so the folder's tokenizer.json alone is enough.
    tok = Tokenizer.from_file(a.hf_base + "/tokenizer.json")

    def logits(model):
        out = []
        with torch.no_grad():
            for p in PROMPTS:
                ids = torch.tensor([tok.encode(p).ids])
                out.append(model(ids).logits[0].double().numpy())
        return out

    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
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
    l.add_argument("--scaled")
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
