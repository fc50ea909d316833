"""Generation: the KV cache gives exactly what recomputing the whole context gives; sampling is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend

from llmscratch.errors import ConfigError
from llmscratch.generate import generate, sample_next
from llmscratch.models import GPT, GPTConfig


def greedy_without_cache(model: GPT, ids: list[int], n: int) -> list[int]:
    """The obvious way: rerun the last block_size tokens for every new token."""
    out = list(ids)
    for _ in range(n):
        logits, _ = model.forward(np.array([out[-model.config.block_size :]]))
        out.append(int(np.argmax(model.bk.to_numpy(logits)[0, -1])))
    return out


@pytest.mark.parametrize("options", [dict(), dict(pos="sinusoidal"), dict(pos="rope", n_kv_head=1, norm="rmsnorm")])
def test_kv_cache_matches_recomputing_everything(bk64, options):
    cfg = GPTConfig(vocab_size=17, block_size=10, n_layer=2, n_head=2, n_embd=16, **options)
    model = GPT(cfg, bk64, seed=3)
    model.training = False
    prompt = [1, 5, 5, 2]
    cached = generate(model, prompt, 14, temperature=0)[0].tolist()  # runs past block_size: the window slides
    assert cached == greedy_without_cache(model, prompt, 14)


def test_batched_generation_and_long_prompts():
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8)
    model = GPT(cfg, make_backend("numpy", "float64"))
    out = generate(model, [[1, 2, 3], [4, 5, 6]], 4, temperature=0)
    assert out.shape == (2, 7)
    assert out[0].tolist() == generate(model, [1, 2, 3], 4, temperature=0)[0].tolist()
    long_prompt = list(range(11)) * 2  # longer than the context: only the last block_size tokens count
    assert (
        generate(model, long_prompt, 3, temperature=0)[0, -3:].tolist()
        == greedy_without_cache(model, long_prompt, 3)[-3:]
    )
    with pytest.raises(ConfigError, match="at least one token"):
        generate(model, [], 3)


def test_seeded_sampling_and_training_flag_restored():
    cfg = GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=8, dropout=0.5)
    model = GPT(cfg, make_backend("numpy"))
    a = generate(model, [1], 12, temperature=1.0, seed=7)
    assert np.array_equal(a, generate(model, [1], 12, temperature=1.0, seed=7))
    assert not np.array_equal(a, generate(model, [1], 12, temperature=1.0, seed=8))
    assert model.training  # generation runs in eval mode (no dropout) and puts training mode back


def test_sample_next_filters():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    draws = np.array([sample_next(logits, rng)[0] for _ in range(20000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20000, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    assert set(sample_next(np.repeat(logits, 500, 0), rng, top_k=2).tolist()) == {2, 3}
    assert set(sample_next(np.repeat(logits, 500, 0), rng, top_p=0.65).tolist()) == {2, 3}  # 0.4 + 0.3 ≥ 0.65
    assert set(sample_next(np.repeat(logits, 500, 0), rng, top_p=0.3).tolist()) == {3}
    assert sample_next(logits, rng, temperature=0).tolist() == [3]
    assert sample_next(logits, rng, top_k=1).tolist() == [3]
    with pytest.raises(ConfigError, match="temperature >= 0"):
        sample_next(logits, rng, temperature=-1)


def test_backends_generate_the_same_greedy_text(backend_id):
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, pos="rope")
    ours = generate(GPT(cfg, make_backend(backend_id, "float64"), seed=1), [3, 1], 10, temperature=0)
    ref = generate(GPT(cfg, make_backend("numpy", "float64"), seed=1), [3, 1], 10, temperature=0)
    assert ours.tolist() == ref.tolist()


@pytest.mark.parametrize("kernel", ["flash", "sdpa"])
def test_kv_cache_generation_with_every_kernel(kernel):
    """The cache hands the kernel strided views with more keys than queries (S > T): every kernel must give
    the reference's tokens."""
    bk = make_backend("torch" if kernel == "sdpa" else "numpy", "float64")
    texts = []
    for name in ("naive", kernel):
        cfg = GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, pos="rope")
        texts.append(generate(GPT(cfg, bk, seed=4, attention=name), [2, 7, 7], 15, temperature=0)[0].tolist())
    assert texts[0] == texts[1]
