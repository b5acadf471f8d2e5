"""Checks that llama.cpp (llama-cpp-python) loads GGUF files written by `scalpel edit` and
generates with them; prints each model's greedy continuations and how far its last-position
logits are from the first model's.

    python3 scripts/llamacpp_load_check.py BASE.gguf EDITED.gguf [MORE.gguf ...]

Prompts are chosen by `general.architecture` (llama, qwen2, gemma3); all files given in one
call should be of the same model.

Exit status 0 when every file loads and generates. On these VMs the CPU advertises AMX but
faults on it: `use_extra_bufts = False` avoids the AMX buffer types (as in
scripts/llamacpp_reference.py).
"""
import sys

import numpy as np
from llama_cpp import Llama

from llamacpp_compat import avoid_amx  # scripts/ is on sys.path when run as a script

avoid_amx()

# The second prompt is in each family's chat markup (Gemma 3 base has no template in its
# GGUF; llama.cpp's built-in Gemma format is used).
PROMPTS_BY_ARCH = {
    "llama": [
        "The capital of France is",
        "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
    ],
    "qwen2": [
        "The capital of France is",
        "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n",
    ],
    "gemma3": [
        "The capital of France is",
        "<start_of_turn>user\nWrite one sentence about the sea.<end_of_turn>\n<start_of_turn>model\n",
    ],
}


def run(path):
    llm = Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    prompts = PROMPTS_BY_ARCH[llm.metadata.get("general.architecture", "llama")]
    outs, logits = [], []
    for p in prompts:
        r = llm.create_completion(p, max_tokens=20, temperature=0.0, top_k=1)
        outs.append(r["choices"][0]["text"])
        llm.reset()
        llm.eval(llm.tokenize(p.encode(), add_bos=False, special=True))
        logits.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64))
        llm.reset()
    return prompts, outs, logits


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit(__doc__)
    base = None
    for path in paths:
        prompts, outs, logits = run(path)
        print(f"== {path}")
        for i, (p, o, l) in enumerate(zip(prompts, outs, logits)):
            line = f"  {p[:30]!r} -> {o!r}"
            if base is not None:
                b = base[i]
                line += f"  | max |Δlogit| vs first {np.abs(l - b).max():.4f}, argmax same: {l.argmax() == b.argmax()}"
            print(line)
        if base is None:
            base = logits
    print("all files loaded and generated")


if __name__ == "__main__":
    main()
