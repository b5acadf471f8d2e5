"""Reference outputs from llama.cpp (llama-cpp-python) for the Qwen2 and Gemma 3 tests.

Writes, for one model file: token ids of a mixed-script test set (texts written for this
project, with the family's own chat markup), and for a few prompts the 20 largest
last-position logits (id and value) and the greedy 20-token continuation.

    python3 scripts/llamacpp_reference_families.py gemma3 GEMMA.gguf tests/data/llamacpp_gemma3.json
    python3 scripts/llamacpp_reference_families.py qwen2 QWEN.gguf tests/data/llamacpp_qwen2.json

The KV cache is kept in f32 (llama.cpp's default is f16) so that the comparison measures
the forward pass rather than cache rounding. On these VMs the CPU advertises AMX but
faults on it: `use_extra_bufts = False` avoids the AMX buffer types.
"""
import json
import sys

import llama_cpp
import llama_cpp.llama_cpp as bindings
from llama_cpp import Llama

from llamacpp_compat import avoid_amx  # scripts/ is on sys.path when run as a script

avoid_amx()

GGML_TYPE_F32 = 0

COMMON_TEXTS = [
    "Hello",
    "Hello world! How are you today?",
    "  leading spaces and\ttabs\n\nnewlines",
    "Numbers: 3.14159, 1,000,000 and 2026-11-26.",
    "Café, naïve, résumé, Ångström, Straße.",
    "日本語のテキストと中文文本。",
    "Emoji: 😀🚀🎉 and flags 🇫🇷",
    "def f(x):\n    return x**2  # comment",
    "Don't stop, it's what we've done; they'll see I'm right.",
    "ALL CAPS and MiXeD CaSe words",
    "Привет, как дела? Γειά σου κόσμε.",
    "   ",
    "a\u00a0b \u2581 c\r\nend ",
    "नमस्ते दुनिया, مرحبا بالعالم, שלום עולם",
]

FAMILIES = {
    "gemma3": {
        "texts": COMMON_TEXTS + [
            "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
            "<bos>text after a control token<eos>",
        ],
        "prompts": [
            "The capital of France is",
            "The largest planet in the solar system is",
            "Water freezes at a temperature of",
            "<start_of_turn>user\nWhat is the capital of Japan?<end_of_turn>\n<start_of_turn>model\n",
        ],
    },
    "qwen2": {
        "texts": COMMON_TEXTS + [
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        ],
        "prompts": [
            "The capital of France is",
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a Python function that returns the square of a number.<|im_end|>\n<|im_start|>assistant\n",
            "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
        ],
    },
}


def main():
    family, model_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    spec = FAMILIES[family]
    llm = Llama(model_path=model_path, n_ctx=512, n_threads=2, logits_all=True, verbose=False,
                type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False)
    tokens = []
    for t in spec["texts"]:
        # add_bos=True means "add the BOS the vocabulary asks for" (Gemma yes, Qwen2 no).
        ids = llm.tokenize(t.encode("utf-8"), add_bos=True, special=True)
        tokens.append({"text": t, "ids": ids})
    gens = []
    for p in spec["prompts"]:
        ids = llm.tokenize(p.encode("utf-8"), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        logits = llm.scores[llm.n_tokens - 1].tolist()
        top = sorted(range(len(logits)), key=lambda i: -logits[i])[:20]
        vocab = bindings.llama_model_get_vocab(llm._model.model)
        out = []
        llm.reset()
        for tok in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            if bindings.llama_vocab_is_eog(vocab, tok) or len(out) >= 20:
                break
            out.append(tok)
        # llama.cpp's own margin (top-1 minus top-2 logit) before each greedy token, so
        # that a test can tell a flipped near-tie from a real disagreement.
        llm.reset()
        llm.eval(ids + out)
        margins = []
        for j in range(len(out)):
            row = sorted(llm.scores[len(ids) - 1 + j].tolist(), reverse=True)
            margins.append(row[0] - row[1])
        gens.append({"prompt": p, "ids": ids, "top20": [[i, logits[i]] for i in top],
                     "greedy20": out, "margins": margins,
                     "text": llm.detokenize(out).decode("utf-8", "replace")})
    with open(out_path, "w") as f:
        json.dump({"llama_cpp_python": llama_cpp.__version__, "family": family,
                   "kv_cache": "f32", "tokens": tokens, "generations": gens},
                  f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
