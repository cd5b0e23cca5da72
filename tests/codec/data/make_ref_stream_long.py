# Generates ref_stream_long.safetensors with kyutai's moshi 0.2.13. Run from the repo root with
# the reference's Python (not part of the test suite; the project never imports moshi).
import json, torch
from safetensors.torch import load_file, save_file
from moshi.models.loaders import get_mimi
cfg = json.load(open("tests/fixtures/mimi_tiny.json"))
m = get_mimi("tests/fixtures/mimi_tiny.safetensors", cfg, num_codebooks=32)
w = load_file("tests/fixtures/mimi_tiny_vectors.safetensors")["wav"]
wav = torch.cat([w, w.flip(-1), 0.5 * w], -1)  # 12 s = 150 frames = 300 steps > context 250
with torch.no_grad():
    with m.streaming(1):
        codes = torch.cat([m.encode(wav[..., i:i+1920]) for i in range(0, wav.shape[-1], 1920)], -1)
    with m.streaming(1):
        dec = torch.cat([m.decode(codes[:, :8, i:i+1]) for i in range(codes.shape[-1])], -1)
    batch_codes = m.encode(wav)
print(codes.shape, (codes != batch_codes).sum().item())
save_file({"stream_codes_q32": codes.int().contiguous(), "stream_decoded_q8": dec.contiguous()},
          "tests/codec/data/ref_stream_long.safetensors", metadata={"source": "moshi 0.2.13 streaming, one frame per call"})
