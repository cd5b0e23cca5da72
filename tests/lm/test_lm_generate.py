"""LMGen: exact greedy generation, seeded sampling, batches, reset, unbounded conversations."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from moshi_lm import LMConfig, LMGen, LMModel
from moshi_lm.models.lm import random_init_


def run(gen: LMGen, user: torch.Tensor) -> torch.Tensor:
    """Feed user [B, 8, T] frame by frame; [B, 9, T] with -1 where nothing came back."""
    outs = []
    with gen.streaming(user.shape[0]):
        for t in range(user.shape[-1]):
            out = gen.step(user[:, :, t:t + 1])
            outs.append(torch.full((user.shape[0], 9, 1), -1) if out is None else out)
    return torch.cat(outs, dim=-1)


def test_greedy_reproduces_reference_exactly(tiny, vectors):
    ours = run(LMGen(tiny, use_sampling=False), vectors["user_codes"].long())
    ref = vectors["greedy_tokens"].long()
    assert (ref[:, :, 0] == -1).all()  # the reference returns nothing on the first step
    assert torch.equal(ours, ref)


def test_extra_user_codebooks_ignored(tiny, vectors):
    user = vectors["user_codes"].long()
    padded = torch.cat([user, torch.randint(0, 2048, (1, 8, 50))], dim=1)
    assert torch.equal(run(LMGen(tiny, use_sampling=False), padded[:, :, :10]),
                       vectors["greedy_tokens"].long()[:, :, :10])


def test_seeded_sampling_reproducible(tiny, vectors):
    user = vectors["user_codes"].long()[:, :, :20]
    a = run(LMGen(tiny, seed=1234), user)
    b = run(LMGen(tiny, seed=1234), user)
    c = run(LMGen(tiny, seed=99), user)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a[:, 0, 1:] < 1000).all() and (a[:, 1:, 1:] < 2048).all() and (a[:, :, 1:] >= 0).all()


def test_sampling_follows_top_k(tiny, vectors):
    """With top_k=1 sampling is the argmax, whatever the temperature."""
    user = vectors["user_codes"].long()[:, :, :15]
    sampled = run(LMGen(tiny, use_sampling=True, temp=3.0, temp_text=3.0, top_k=1, top_k_text=1, seed=0), user)
    assert torch.equal(sampled, vectors["greedy_tokens"].long()[:, :, :15])


def test_batch_rows_equal_single_runs(tiny, vectors):
    user = vectors["user_codes"].long()[:, :, :25]
    other = torch.randint(0, 2048, user.shape, generator=torch.Generator().manual_seed(3))
    batch = run(LMGen(tiny, use_sampling=False), torch.cat([user, other]))
    assert torch.equal(batch[:1], vectors["greedy_tokens"].long()[:, :, :25])
    assert torch.equal(batch[1:], run(LMGen(tiny, use_sampling=False), other))


def test_reset_restarts_the_conversation(tiny, vectors):
    user = vectors["user_codes"].long()[:, :, :12]
    gen = LMGen(tiny, seed=7)
    with gen.streaming(1):
        first = [gen.step(user[:, :, t:t + 1]) for t in range(12)]
        gen.reset()
        second = [gen.step(user[:, :, t:t + 1]) for t in range(12)]
    assert first[0] is None and second[0] is None
    assert all(torch.equal(a, b) for a, b in zip(first[1:], second[1:]))


def test_explicit_state(tiny, vectors):
    gen = LMGen(tiny, use_sampling=False)
    state = gen.new_state(1)
    user = vectors["user_codes"].long()
    outs = [gen.step(user[:, :, t:t + 1], state=state) for t in range(5)]
    assert state.step == 5
    assert torch.equal(torch.cat(outs[1:], -1), vectors["greedy_tokens"].long()[:, :, 1:5])


def test_bad_input(tiny):
    gen = LMGen(tiny)
    with pytest.raises(RuntimeError, match="streaming"):
        gen.step(torch.zeros(1, 8, 1, dtype=torch.long))
    with gen.streaming(2):
        with pytest.raises(ValueError, match=r"expected \[B, >=8, 1\]"):
            gen.step(torch.zeros(2, 7, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="batch 1 differs"):
            gen.step(torch.zeros(1, 8, 1, dtype=torch.long))


def test_ring_cache_matches_full_context_attention(fixtures_dir):
    """Streaming past the context (ring wrap-around, absolute RoPE positions) equals the
    full-sequence forward with its context mask."""
    raw = json.loads((fixtures_dir / "moshi_tiny.json").read_text())
    raw["context"] = 8
    lm = random_init_(LMModel(LMConfig.from_dict(raw)), seed=5)
    tokens = torch.randint(0, 1000, (2, 17, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full_h, full_text = lm.forward_text(tokens)
        state = lm.new_state(2)
        steps = [lm.forward_text(tokens[:, :, t:t + 1], t, state.temporal) for t in range(30)]
    stream_h = torch.cat([h for h, _ in steps], dim=1)
    stream_text = torch.cat([x for _, x in steps], dim=2)
    assert (stream_h - full_h).abs().max().item() < 1e-5
    assert (stream_text - full_text).abs().max().item() < 1e-5
    # without the context limit the outputs differ after step 8: the test can see the limit
    lm_long = LMModel(LMConfig.from_dict({**raw, "context": 64}))
    lm_long.load_state_dict(lm.state_dict())
    with torch.no_grad():
        _, long_text = lm_long.forward_text(tokens)
    assert (long_text[:, :, 8:] - full_text[:, :, 8:]).abs().max().item() > 1e-3


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# 5,000 steps of the tiny LM in a process of its own (~90 s of one core), printing as JSON what
# the test checks: RSS and the count of gc-tracked objects at step 3,100 and at the end, whether
# the KV rings are still the preallocated ones, and the last step's output
LONG_SCRIPT = textwrap.dedent("""
    import gc, json, os, sys
    import torch
    from safetensors.torch import load_file
    from moshi_lm import LMGen, load_lm
    torch.set_num_threads(1)  # it runs beside the other tests
    fixtures = sys.argv[1]
    lm = load_lm(f"{fixtures}/moshi_tiny.safetensors", f"{fixtures}/moshi_tiny.json")
    user = load_file(f"{fixtures}/moshi_tiny_vectors.safetensors")["user_codes"].long()

    def rss() -> int:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    gen = LMGen(lm, seed=0)
    with gen.streaming(1) as state:
        ptrs = [c.keys.data_ptr() for c in state.lm.temporal]
        for t in range(5000):
            out = gen.step(user[:, :, t % 50:t % 50 + 1])
            if t == 3100:
                gc.collect()
                rss_mid, objects_mid = rss(), len(gc.get_objects())
        gc.collect()
        print(json.dumps({
            "rss_growth": rss() - rss_mid, "objects_growth": len(gc.get_objects()) - objects_mid,
            "step": state.step, "same_rings": [c.keys.data_ptr() for c in state.lm.temporal] == ptrs,
            "ring_length": state.lm.temporal[0].keys.shape[2], "out": out.tolist()}))
""")


@pytest.mark.slow
@pytest.mark.background(LONG_SCRIPT, str(FIXTURES))
def test_five_thousand_steps_flat_memory(background_output: str) -> None:
    """A conversation runs past the 3000-step context with constant memory."""
    res = json.loads(background_output.splitlines()[-1])
    assert res["step"] == 5000
    assert res["same_rings"]  # the same preallocated rings
    assert res["ring_length"] == 3000
    out = torch.tensor(res["out"])
    assert out.shape == (1, 9, 1)
    assert 0 <= int(out[0, 0, 0]) < 1000 and ((out[0, 1:] >= 0) & (out[0, 1:] < 2048)).all()
    print(f"RSS step 3100 -> 5000: {res['rss_growth'] / 2**20:+.2f} MiB, gc objects {res['objects_growth']:+d}")
    assert res["rss_growth"] < 8 * 2**20
    assert res["objects_growth"] < 100
