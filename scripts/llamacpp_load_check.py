"""Checks that llama.cpp (llama-cpp-python) loads GGUF files written by `scalpel edit` and
generates with them; prints each model's greedy continuations and how far its last-position
logits are from the first model's.

    python3 scripts/llamacpp_load_check.py BASE.gguf EDITED.gguf [MORE.gguf ...]

Exit status 0 when every file loads and generates. On these VMs the CPU advertises AMX but
faults on it: `use_extra_bufts = False` avoids the AMX buffer types (as in
scripts/llamacpp_reference.py).
"""
import sys

import llama_cpp.llama_cpp as bindings
import numpy as np
from llama_cpp import Llama

_default_params = bindings.llama_model_default_params


def _params():
    p = _default_params()
    p.use_extra_bufts = False
    return p


bindings.llama_model_default_params = _params

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
]


def run(path):
    llm = Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    outs, logits = [], []
    for p in PROMPTS:
        r = llm.create_completion(p, max_tokens=20, temperature=0.0, top_k=1)
        outs.append(r["choices"][0]["text"])
        llm.reset()
        llm.eval(llm.tokenize(p.encode(), add_bos=False, special=True))
        logits.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64))
        llm.reset()
    return outs, logits


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit(__doc__)
    base = None
    for path in paths:
        outs, logits = run(path)
        print(f"== {path}")
        for p, o, l in zip(PROMPTS, outs, logits):
            line = f"  {p[:30]!r} -> {o!r}"
            if base is not None:
                b = base[PROMPTS.index(p)]
                line += f"  | max |Δlogit| vs first {np.abs(l - b).max():.4f}, argmax same: {l.argmax() == b.argmax()}"
            print(line)
        if base is None:
            base = logits
    print("all files loaded and generated")


if __name__ == "__main__":
    main()
