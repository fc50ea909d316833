"""The layers by central finite differences in float64 (max relative error ≤ 1e-6), on every backend: the
cross-attention layer's input and memory gradients, and every parameter of a tiny encoder classifier and
encoder–decoder (sampled elements of each tensor), whose backward chains every layer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

from llmscratch.kernels import get_attention_kernel, get_ops
from llmscratch.layers import Attention, Runtime
from llmscratch.models import EncoderClassifier, ModelConfig, Seq2Seq, init_params

EPS = 1e-6
TINY = dict(block_size=8, n_layer=1, n_head=2, n_embd=8, n_inner=12, bias=True)


def numeric_grad(f, x: np.ndarray, index) -> float:
    up, down = x.copy(), x.copy()
    up[index] += EPS
    down[index] -= EPS
    return (f(up) - f(down)) / (2 * EPS)


@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
def test_cross_attention_layer_by_finite_differences(bk64, gqa):
    """out = cross_attn(x, memory) with a padded memory: dx and dmemory against central differences."""
    rng = np.random.default_rng(0)
    rt = Runtime(bk64, get_attention_kernel("naive", bk64), get_ops("array-api", bk64))
    layer = Attention(rt, "x", 8, 2, 1 if gqa else 2, bias=True, causal=False, cross=True)
    rt.params = {n: bk64.from_numpy(rng.standard_normal(shape) * 0.5) for n, (shape, _) in layer.specs().items()}
    x, memory = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, 8))
    mask = bk64.from_numpy(np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=bool))
    dout = rng.standard_normal((2, 3, 8))

    def loss(x_: np.ndarray, m_: np.ndarray) -> float:
        out, _ = layer.forward(bk64.from_numpy(x_), mask, memory=bk64.from_numpy(m_))
        return float(np.sum(bk64.to_numpy(out) * dout))

    _, cache = layer.forward(bk64.from_numpy(x), mask, memory=bk64.from_numpy(memory))
    dx, dmem = layer.backward(bk64.from_numpy(dout), cache, {})
    for name, analytic, f, at in (
        ("x", dx, lambda a: loss(a, memory), x),
        ("memory", dmem, lambda a: loss(x, a), memory),
    ):
        numeric = np.zeros_like(at)
        for i in np.ndindex(at.shape):
            numeric[i] = numeric_grad(f, at, i)
        assert rel_err(bk64.to_numpy(analytic), numeric) <= 1e-6, name
    np.testing.assert_array_equal(bk64.to_numpy(dmem)[1, 2:], 0.0)  # padded memory gets no gradient


def model_loss_case(kind: str, bk):
    rng = np.random.default_rng(1)
    if kind == "encoder":
        cfg = ModelConfig(
            kind="encoder", vocab_size=7, n_classes=3, norm_first=False, mlp="gelu_exact", pooling="mean", **TINY
        )
        ids, mask, labels = rng.integers(0, 7, (2, 5)), np.array([[1] * 5, [1, 1, 1, 0, 0]], bool), np.array([2, 0])

        def run(model):
            return model.forward(ids, labels, key_mask=mask)[1]

        return cfg, EncoderClassifier, run
    cfg = ModelConfig(kind="seq2seq", vocab_size=7, n_decoder_layer=2, pos="rope", **TINY)
    src, tgt = rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 4))
    targets = np.where([[1] * 4, [1, 1, 0, 0]], rng.integers(0, 7, (2, 4)), -100)
    src_mask = np.array([[1] * 5, [1, 1, 1, 0, 0]], bool)

    def run(model):
        return model.forward(src, tgt, targets, src_mask=src_mask)[1]

    return cfg, Seq2Seq, run


@pytest.mark.parametrize("kind", ["encoder", "seq2seq"])
def test_every_parameter_gradient_by_finite_differences(bk64, kind):
    cfg, cls, run = model_loss_case(kind, bk64)
    host = {n: bk64.to_numpy(p) for n, p in init_params(cfg, bk64, seed=3).items()}
    host = {n: a + np.random.default_rng(4).standard_normal(a.shape) * 0.1 for n, a in host.items()}  # not at init
    model = cls(cfg, bk64, params={n: bk64.from_numpy(a) for n, a in host.items()})
    run(model)
    grads = {n: bk64.to_numpy(g) for n, g in model.backward().items()}
    rng = np.random.default_rng(5)
    for name, value in host.items():
        flat = rng.choice(value.size, size=min(4, value.size), replace=False)
        for k in flat:
            index = np.unravel_index(k, value.shape)

            def loss(a: np.ndarray, name=name) -> float:
                params = {n: bk64.from_numpy(a if n == name else v) for n, v in host.items()}
                return bk64.item(run(cls(cfg, bk64, params=params)))

            numeric = numeric_grad(loss, value, index)
            # central differences of a loss ~2 carry ~1e-10 of rounding: tensors with tiny gradients are held
            # to that absolute floor instead
            scale = max(np.max(np.abs(grads[name])), 1e-3)
            assert abs(grads[name][index] - numeric) / scale <= 1e-6, (name, index)
