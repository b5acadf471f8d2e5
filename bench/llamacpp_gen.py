"""Greedy single-stream generation speed of llama.cpp (llama-cpp-python) on a GGUF file,
as the peer figure for `scalpel bench` (same prompt, same token count, 2 threads).

    pip install llama-cpp-python==0.3.36
    python3 bench/llamacpp_gen.py MODEL.gguf [N_TOKENS] [RUNS]

Prints one JSON line: median new tokens/s over RUNS after a warm-up.
"""
import json
import statistics
import sys
import time

import llama_cpp.llama_cpp as bindings
from llama_cpp import Llama

_default_params = bindings.llama_model_default_params


def _params():
    # These VMs advertise AMX but fault on it; keep llama.cpp off the AMX buffer types.
    p = _default_params()
    p.use_extra_bufts = False
    return p


bindings.llama_model_default_params = _params


def main():
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    llm = Llama(model_path=path, n_ctx=512, n_threads=2, n_batch=512, verbose=False)
    prompt = llm.tokenize(b"Once upon a time", add_bos=False)

    def once():
        llm.reset()
        t = time.perf_counter()
        got = 0
        for tok in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            got += 1
            if got >= n:
                break
        return got / (time.perf_counter() - t)

    once()
    rates = [once() for _ in range(runs)]
    print(json.dumps({"peer": "llama.cpp", "greedy_b1_tok_s": statistics.median(rates), "tokens": n}))


if __name__ == "__main__":
    main()
