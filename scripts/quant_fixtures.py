#!/usr/bin/env python3
"""Writes tests/fixtures/quant_gguf_py.bin: expectations from gguf-py (gguf.quants) for the
Rust quantisation tests, so that those tests need no Python.

Encode cases: a float32 row -> bytes from gguf.quants.quantize.
Decode cases: bytes (random quants with sane f16 scales) -> floats from gguf.quants.dequantize.

Format, repeated: u8 kind (0 encode, 1 decode), u32 ggml type id, u32 n_floats,
u32 n_bytes, floats (f32 LE), bytes.  Usage: python3 scripts/quant_fixtures.py [OUT]
"""
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(7)
out = bytearray()


def case(kind, ty, floats, data):
    floats = np.asarray(floats, dtype="<f4")
    data = bytes(data)
    out.extend(struct.pack("<BIII", kind, int(ty), floats.size, len(data)))
    out.extend(floats.tobytes())
    out.extend(data)


rows = [
    rng.normal(0, 0.05, 256),
    rng.normal(0, 3.0, 256),
    np.concatenate([np.zeros(32), np.full(32, 0.25), rng.uniform(-1, 1, 192)]),
    np.round(rng.uniform(-8, 8, 256)) / 4,  # many exact ties at half steps
]
for ty in [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
    for r in rows:
        r = r.astype(np.float32)
        case(0, ty, r, quants.quantize(r, ty).tobytes())

for ty, (bs, nb) in [(T.Q4_K, (256, 144)), (T.Q5_K, (256, 176)), (T.Q6_K, (256, 210)),
                     (T.Q4_0, (32, 18)), (T.Q4_1, (32, 20)), (T.Q5_0, (32, 22)),
                     (T.Q5_1, (32, 24)), (T.Q8_0, (32, 34))]:
    n_blocks = 512 // bs
    raw = bytearray(rng.integers(0, 256, n_blocks * nb, dtype=np.uint8).tobytes())
    # f16 fields: small positive scales, so the expected floats are finite and meaningful.
    f16_at = {T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.Q4_0: [0], T.Q8_0: [0],
              T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2]}[ty]
    for b in range(n_blocks):
        for at in f16_at:
            v = np.float16(rng.uniform(0.001, 0.1) * rng.choice([-1, 1]))
            raw[b * nb + at:b * nb + at + 2] = v.tobytes()
    vals = quants.dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), ty).astype(np.float32)
    case(1, ty, vals.reshape(-1), raw)

path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/quant_gguf_py.bin"
with open(path, "wb") as f:
    f.write(out)
print(f"wrote {len(out)} bytes to {path}")
