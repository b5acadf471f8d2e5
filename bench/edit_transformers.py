"""The paper's surgery recipe in Hugging Face transformers, the peer of `scalpel edit` in
`bench/run.sh`: load the model, rank every gate-projection row by cosine with the probe
direction W[1], add α·W[1] to the most anti-aligned fraction of rows, save the model.

    python bench/edit_transformers.py MODEL PROBE.safetensors OUT_DIR [--alpha 1.08] [--fraction F]

MODEL is a GGUF file (loaded through `gguf_file=`, dequantised to f32; saved as f32
safetensors, as transformers writes no GGUF and refuses save_pretrained on it) or a Hugging Face folder (kept in its own
dtype). The written files are fsync'ed, as `scalpel edit` does. Prints one JSON line.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("probe")
    ap.add_argument("out")
    ap.add_argument("--alpha", type=float, default=1.08)
    ap.add_argument("--fraction", type=float, default=16384 / 352256)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    t0 = time.perf_counter()
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    t_import = time.perf_counter()
    if os.path.isdir(a.model):
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype="auto")
    else:
        folder, name = os.path.split(os.path.abspath(a.model))
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    t_load = time.perf_counter()

    with torch.no_grad():
        w = load_file(a.probe)["weight"][1].float()
        gates = [layer.mlp.gate_proj.weight for layer in model.model.layers]
        cos = torch.cat([(g.float() @ w) / (g.float().norm(dim=1) * w.norm()) for g in gates])
        k = round(a.fraction * cos.numel())
        rows = torch.topk(-cos, k).indices
        n_ff = gates[0].shape[0]
        for r in rows.tolist():
            g = gates[r // n_ff]
            g[r % n_ff] += (a.alpha * w).to(g.dtype)
    t_edit = time.perf_counter()

    if getattr(model, "hf_quantizer", None) is None:
        model.save_pretrained(a.out)
    else:
        # transformers refuses save_pretrained on a model read from GGUF ("quantized with
        # gguf and is not serializable"); its weights are plain f32 by now, so write them
        # with safetensors' own helper, next to the config.
        from safetensors.torch import save_model

        os.makedirs(a.out, exist_ok=True)
        model.config.save_pretrained(a.out)
        save_model(model, os.path.join(a.out, "model.safetensors"))
    for f in os.listdir(a.out):
        fd = os.open(os.path.join(a.out, f), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    t_save = time.perf_counter()
    print(json.dumps({"rows": k, "import_secs": t_import - t0, "load_secs": t_load - t_import,
                      "select_edit_secs": t_edit - t_load, "save_secs": t_save - t_edit}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        sys.exit(f"edit_transformers.py: {type(e).__name__}: {e}")
