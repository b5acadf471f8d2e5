"""Reference outputs from llama.cpp (llama-cpp-python) for scalpel's tests.

Writes tests/data/llamacpp_reference.json: token ids for a mixed-script test set (texts
written for this project), greedy continuations and top-5 last-position logits of a few
prompts on the default model.

    pip install llama-cpp-python==0.3.36   # builds llama.cpp from source, ~8 min
    python3 scripts/llamacpp_reference.py MODEL.gguf tests/data/llamacpp_reference.json

On these VMs the CPU advertises AMX but faults on it: `use_extra_bufts = False` avoids
the AMX buffer types.
"""
import json
import sys

import llama_cpp
from llama_cpp import Llama

from llamacpp_compat import avoid_amx  # scripts/ is on sys.path when run as a script

avoid_amx()

TEXTS = [
    "Hello",
    "Hello world! How are you today?",
    "  leading spaces and\ttabs\n\nnewlines",
    "Numbers: 3.14159, 1,000,000 and 2026-11-26.",
    "Café, naïve, résumé, Ångström, Straße.",
    "日本語のテキストと中文文本。",
    "Emoji: 😀🚀🎉 and flags 🇫🇷",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x**2  # comment",
    "Don't stop, it's what we've done; they'll see I'm right.",
    "ALL CAPS and MiXeD CaSe words",
    "Привет, как дела? Γειά σου κόσμε.",
]

PROMPTS = [
    "The capital of France is",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woman who",
]


def main():
    model_path, out_path = sys.argv[1], sys.argv[2]
    llm = Llama(model_path=model_path, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    tokens = []
    for t in TEXTS:
        ids = llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)
        tokens.append({"text": t, "ids": ids})
    gens = []
    for p in PROMPTS:
        ids = llm.tokenize(p.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = llm.scores[llm.n_tokens - 1].tolist()
        top5 = sorted(range(len(logits)), key=lambda i: -logits[i])[:5]
        out = []
        llm.reset()
        for tok in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            if tok == llm.token_eos() or len(out) >= 20:
                break
            out.append(tok)
        gens.append({"prompt": p, "ids": ids, "top5": top5, "greedy20": out,
                     "text": llm.detokenize(out).decode("utf-8", "replace")})
    with open(out_path, "w") as f:
        json.dump({"llama_cpp_python": llama_cpp.__version__, "tokens": tokens,
                   "generations": gens}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
