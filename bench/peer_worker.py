"""One peer of `bench/run.sh`, kept loaded in its own process (so that two OpenMP runtimes
never share one) and driven by the harness over stdin/stdout, one JSON object a line.

    python bench/peer_worker.py transformers|llamacpp MODEL.gguf THREADS

Requests: {"op": "collect", "texts": FILE, "batch": 16, "max_tokens": 128, "save": PATH}
and {"op": "generate", "prompts": FILE, "tokens": 20, "batch": 16}; {"op": "warmup"}
runs a small piece of each. Each answer holds the seconds of the timed work only (loading
happens once, before the first request). Errors come back as {"error": "..."}.
"""
import json
import os
import sys
import time


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


class Transformers:
    """The paper's pipeline: Hugging Face transformers on PyTorch, f32 weights."""

    def __init__(self, model_path, threads):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        folder, name = os.path.split(os.path.abspath(model_path))
        t = time.perf_counter()
        self.tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        self.model.eval()
        self.load_secs = time.perf_counter() - t
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.version = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}

    def collect(self, texts, batch, max_tokens):
        """Mean over real tokens of the final-norm output (`last_hidden_state` of the base
        model), texts sorted by length and right-padded, as scalpel does."""
        torch = self.torch
        self.tok.padding_side = "right"
        enc = [self.tok(t, truncation=True, max_length=max_tokens)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
        out = [None] * len(texts)
        with torch.inference_mode():
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                padded = self.tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
                h = self.model.model(input_ids=padded["input_ids"],
                                     attention_mask=padded["attention_mask"]).last_hidden_state
                m = padded["attention_mask"].unsqueeze(-1).to(h.dtype)
                pooled = (h * m).sum(1) / m.sum(1)
                for r, i in enumerate(idx):
                    out[i] = pooled[r].tolist()
        return out, sum(len(e) for e in enc)

    def generate(self, prompts, tokens, batch):
        """Greedy, batches of `batch` prompts left-padded (sorted by length), stopping at EOS."""
        torch = self.torch
        self.tok.padding_side = "left"
        order = sorted(range(len(prompts)), key=lambda i: -len(self.tok(prompts[i])["input_ids"]))
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        got = 0
        with torch.inference_mode():
            for s in range(0, len(order), batch):
                enc = self.tok([prompts[i] for i in order[s:s + batch]], return_tensors="pt", padding=True)
                out = self.model.generate(**enc, max_new_tokens=tokens, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
                for row in out[:, enc["input_ids"].shape[1]:].tolist():
                    n = 0
                    for t in row:
                        if t in eos:
                            break
                        n += 1
                    got += n
        return got


class LlamaCpp:
    """llama.cpp through llama-cpp-python: embeddings with mean pooling, and generation one
    prompt at a time (its Python API has no batched generation)."""

    def __init__(self, model_path, threads):
        import llama_cpp
        import llama_cpp.llama_cpp as bindings
        from llama_cpp import Llama

        default = bindings.llama_model_default_params

        def params():
            # These VMs advertise AMX but fault on it: keep llama.cpp off the AMX buffers.
            p = default()
            p.use_extra_bufts = False
            return p

        bindings.llama_model_default_params = params
        self.llama_cpp = llama_cpp
        t = time.perf_counter()
        common = dict(model_path=model_path, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.emb = Llama(n_ctx=512, n_batch=512, n_ubatch=512, embedding=True,
                         pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, **common)
        self.gen = Llama(n_ctx=1024, n_batch=512, **common)
        self.load_secs = time.perf_counter() - t
        self.version = {"llama_cpp_python": llama_cpp.__version__}
        try:
            # Which of ggml's CPU paths this build has (AVX2, AVX512, ...), for the table.
            info = bindings.llama_print_system_info().decode(errors="replace")
            self.version["system_info"] = " ".join(
                f.split("=")[0].strip() for f in info.split("|") if f.strip().endswith("= 1"))
        except Exception:  # an older binding without it: the table says "?"
            pass

    def collect(self, texts, batch, max_tokens):
        """`Llama.embed`: packs as many texts as fit into one 512-token batch."""
        cut = []
        n_tok = 0
        for t in texts:
            ids = self.emb.tokenize(t.encode("utf-8"))
            if len(ids) > max_tokens:
                t = self.emb.detokenize(ids[:max_tokens]).decode("utf-8", "replace")
            n_tok += min(len(ids), max_tokens)
            cut.append(t)
        return self.emb.embed(cut, normalize=False), n_tok

    def generate(self, prompts, tokens, batch):
        eos = self.gen.token_eos()
        got = 0
        for p in prompts:
            ids = self.gen.tokenize(p.encode("utf-8"))
            n = 0
            for t in self.gen.generate(ids, top_k=1, temp=0.0, reset=True):
                if t == eos or n >= tokens:
                    break
                n += 1
            got += n
        return got


def main():
    kind, model_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        peer = {"transformers": Transformers, "llamacpp": LlamaCpp}[kind](model_path, threads)
        print(json.dumps({"ready": True, "load_secs": peer.load_secs, "version": peer.version}), flush=True)
    except Exception as e:  # reported to the harness, which prints one clear line
        print(json.dumps({"error": f"{kind}: loading {model_path}: {type(e).__name__}: {e}"}), flush=True)
        return
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "warmup":
                peer.collect(["Warm-up text number one.", "And a second one, a little longer."], 2, 128)
                peer.generate(["Once upon a time"], 4, 1)
                ans = {"ok": True}
            elif req["op"] == "collect":
                texts = lines(req["texts"])
                t = time.perf_counter()
                vecs, n_tok = peer.collect(texts, req["batch"], req["max_tokens"])
                secs = time.perf_counter() - t
                if req.get("save"):
                    import numpy as np
                    np.asarray(vecs, dtype="<f4").tofile(req["save"])
                ans = {"secs": secs, "texts": len(texts), "tokens": n_tok}
            elif req["op"] == "generate":
                prompts = lines(req["prompts"])
                t = time.perf_counter()
                got = peer.generate(prompts, req["tokens"], req["batch"])
                ans = {"secs": time.perf_counter() - t, "generated_tokens": got, "prompts": len(prompts)}
            else:
                ans = {"error": f"unknown op {req['op']!r}"}
        except Exception as e:
            ans = {"error": f"{kind} {req.get('op')}: {type(e).__name__}: {e}"}
        print(json.dumps(ans), flush=True)


if __name__ == "__main__":
    main()
