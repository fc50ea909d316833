"""The whole GPT against the plain-PyTorch autograd reference built from the same weights:
logits, loss and every parameter gradient, float64, for each option."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend, rel_err

from llmscratch.kernels import cpu_build
from llmscratch.models import GPT, GPTConfig

torch = pytest.importorskip("torch")
from llmscratch.reference.torch_gpt import TorchGPT  # noqa: E402

BASE = dict(vocab_size=13, block_size=9, n_layer=2, n_head=4, n_embd=16, bias=True)
VARIANTS = {
    "gpt2": {},
    "no_bias_untied": dict(bias=False, tie_embeddings=False),
    "sinusoidal_relu": dict(pos="sinusoidal", mlp="relu"),
    "rope_rmsnorm_swiglu": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False),
    "gqa_rope": dict(pos="rope", n_kv_head=2),
    "mqa_gelu_exact_untied": dict(n_kv_head=1, mlp="gelu_exact", tie_embeddings=False),
    "rmsnorm_with_bias_sinusoidal": dict(norm="rmsnorm", pos="sinusoidal", n_inner=24),
}


def batch(cfg: GPTConfig, B: int = 3, T: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, cfg.vocab_size, (B, T))
    idx[0, :3] = 5  # repeated tokens
    return idx, rng.integers(0, cfg.vocab_size, (B, T))


FAST = dict(ops="cpu-fused", attention="cpu-tiled")  # the C++ kernels, where they run


@pytest.mark.parametrize("fast", [False, True], ids=["array-api", "cpu-fused"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gpt_matches_torch_reference(bk64, variant, fast):
    if fast and (reason := cpu_build.unavailable(bk64)):
        pytest.skip(reason)
    cfg = GPTConfig(**(BASE | VARIANTS[variant]))
    model = GPT(cfg, bk64, seed=1, **(FAST if fast else {}))
    idx, targets = batch(cfg)
    logits, loss = model.forward(idx, targets)
    grads = model.backward()

    ref = TorchGPT.from_params(cfg, {n: bk64.to_numpy(p) for n, p in model.params.items()})
    ref_logits, ref_loss = ref(torch.tensor(idx), torch.tensor(targets))
    ref_loss.backward()
    ref_grads = ref.grads_as_ours()

    assert rel_err(bk64.to_numpy(logits), ref_logits.detach().numpy()) <= 1e-10
    assert abs(bk64.item(loss) - ref_loss.item()) <= 1e-10
    assert grads.keys() == ref_grads.keys() == model.params.keys()
    for name, g in grads.items():
        assert rel_err(bk64.to_numpy(g), ref_grads[name]) <= 1e-10, name


def test_every_backend_starts_from_identical_weights(backend_id):
    cfg = GPTConfig(**BASE)
    ours = GPT(cfg, make_backend(backend_id, "float32"), seed=3)
    numpy_model = GPT(cfg, make_backend("numpy", "float64"), seed=3)
    for name, p in ours.params.items():
        np.testing.assert_array_equal(ours.bk.to_numpy(p), numpy_model.params[name].astype(np.float32))


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_one_training_step_same_on_every_backend(backend_id, dtype, tol):
    cfg = GPTConfig(**BASE, pos="rope", n_kv_head=2)
    bk = make_backend(backend_id, dtype)
    results = []
    for b in (bk, make_backend("numpy", dtype)):
        model = GPT(cfg, b, seed=2)
        idx, targets = batch(cfg)
        logits, loss = model.forward(idx, targets)
        grads = model.backward()
        results.append((b.to_numpy(logits), b.item(loss), {n: b.to_numpy(g) for n, g in grads.items()}))
    (logits, loss, grads), (ref_logits, ref_loss, ref_grads) = results
    assert rel_err(logits, ref_logits) <= tol
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    for name in grads:
        assert rel_err(grads[name], ref_grads[name]) <= tol, name
