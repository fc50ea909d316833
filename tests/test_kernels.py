"""Every attention kernel against the reference ("naive") on every backend it runs on:
outputs and all three input gradients, float64 ≤ 1e-12 and float32 ≤ 2e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_IDS, make_backend, rel_err

from llmscratch import ops
from llmscratch.kernels import ATTENTION_KERNELS, KERNELS, get_attention_kernel
from llmscratch.kernels.flash import flash_attention_backward, flash_attention_forward
from llmscratch.util.errors import ConfigError

# (id, B, H, Hkv, T, S, causal, padding): T = 1, 7, 333 (not a multiple of the 128 block), 256 (a multiple)
SHAPES = [
    ("T1_causal", 2, 2, 2, 1, 1, True, None),
    ("T7_causal_gqa", 2, 4, 2, 7, 7, True, None),
    ("T7_bidirectional_padded", 2, 2, 2, 7, 7, False, "rows"),
    ("T333_causal_padded_gqa", 1, 4, 2, 333, 333, True, "some"),
    ("T256_causal_mqa", 1, 4, 1, 256, 256, True, None),
    ("cross_T5_S333_padded", 2, 2, 2, 5, 333, False, "some"),
    ("kv_cache_T3_S300", 1, 2, 2, 3, 300, True, None),
]
KERNEL_IDS = [k for k in ATTENTION_KERNELS if k != "naive"]


def runs_on(kernels):
    """(backend id, kernel) pairs where the kernel runs on that backend (GPU ids still skip without a GPU)."""
    return [
        pytest.param(b, k, id=f"{b}-{k}")
        for b in BACKEND_IDS
        for k in kernels
        if KERNELS[k].runs_on(b.partition("-")[0])
    ]


def make_inputs(B, H, Hkv, T, S, padding, seed=0, logit_scale=1.0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, T, 16)) * logit_scale
    k, v = rng.standard_normal((B, Hkv, S, 16)), rng.standard_normal((B, Hkv, S, 16))
    mask = None
    if padding == "some":
        mask = rng.random((B, S)) > 0.25
        mask[:, 0] = True
    elif padding == "rows":  # batch row 1 has no visible key at all
        mask = np.ones((B, S), dtype=bool)
        mask[1] = False
    return q, k, v, mask, rng.standard_normal((B, H, T, 16))


def run(bk, forward, backward, q, k, v, mask, dout, causal):
    arrays = [bk.from_numpy(a) for a in (q, k, v)]
    key_mask = None if mask is None else bk.from_numpy(mask)
    try:
        out, cache = forward(bk, *arrays, causal=causal, key_mask=key_mask)
    except RuntimeError as e:
        if "No viable backend" in str(e):
            pytest.skip(f"not available on this device: {str(e).splitlines()[0][:80]}")
        raise
    grads = backward(bk, bk.from_numpy(dout), cache)
    return [bk.to_numpy(out)] + [bk.to_numpy(g) for g in grads]


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("backend_id, kernel", runs_on(KERNEL_IDS))
def test_kernel_matches_naive(backend_id, kernel, shape, dtype, tol):
    bk = make_backend(backend_id, dtype)
    _, B, H, Hkv, T, S, causal, padding = shape
    q, k, v, mask, dout = make_inputs(B, H, Hkv, T, S, padding)
    got = run(bk, KERNELS[kernel].forward, KERNELS[kernel].backward, q, k, v, mask, dout, causal)
    ref = run(bk, ops.attention_forward, ops.attention_backward, q, k, v, mask, dout, causal)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        assert np.all(np.isfinite(a)), name
        assert rel_err(a, b, floor=1.0) <= tol, f"{kernel} {name}"


@pytest.mark.parametrize("backend_id, kernel", runs_on(["naive", *KERNEL_IDS]))
def test_large_logits_stay_finite(backend_id, kernel):
    """Logits ×30 (saturated softmax): no inf or NaN, and still the float64 answer in float32."""
    bk = make_backend(backend_id, "float32")
    q, k, v, mask, dout = make_inputs(1, 2, 2, 150, 150, "some", logit_scale=30.0)
    got = run(bk, KERNELS[kernel].forward, KERNELS[kernel].backward, q, k, v, mask, dout, True)
    bk64 = make_backend("numpy", "float64")
    ref = run(bk64, ops.attention_forward, ops.attention_backward, q, k, v, mask, dout, True)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        assert np.all(np.isfinite(a)), name
        assert rel_err(a, b) <= 1e-3, name  # float32 rounding of ±1000 logits, not a kernel error


@pytest.mark.parametrize("block", [1, 3, 16])
def test_flash_any_block_size_and_finite_differences(block):
    """Tiny blocks stress every tile path (diagonal, skipped, partial); the gradient is checked against
    central differences directly, not only against the reference op."""
    bk = make_backend("numpy", "float64")
    q, k, v, mask, dout = make_inputs(1, 2, 1, 5, 5, "some", seed=3)

    def loss(qq, kk, vv):
        out, _ = flash_attention_forward(
            bk, *(bk.from_numpy(a) for a in (qq, kk, vv)), True, bk.from_numpy(mask), block=block
        )
        return float(np.sum(bk.to_numpy(out) * dout))

    _, cache = flash_attention_forward(
        bk, *(bk.from_numpy(a) for a in (q, k, v)), True, bk.from_numpy(mask), block=block
    )
    grads = flash_attention_backward(bk, bk.from_numpy(dout), cache)
    inputs = [q, k, v]
    for which, analytic in enumerate(grads):
        numeric = np.zeros_like(inputs[which])
        for i in np.ndindex(numeric.shape):
            vals = []
            for sign in (1, -1):
                shifted = [a.copy() for a in inputs]
                shifted[which][i] += sign * 1e-6
                vals.append(loss(*shifted))
            numeric[i] = (vals[0] - vals[1]) / 2e-6
        assert rel_err(bk.to_numpy(analytic), numeric) <= 1e-6


def test_flash_fully_masked_rows_are_zero_without_nan():
    bk = make_backend("numpy", "float64")
    q, k, v, mask, dout = make_inputs(2, 2, 2, 9, 9, "rows")
    out, cache = flash_attention_forward(
        bk, *(bk.from_numpy(a) for a in (q, k, v)), False, bk.from_numpy(mask), block=4
    )
    assert np.all(bk.to_numpy(out)[1] == 0)
    for g in flash_attention_backward(bk, bk.from_numpy(dout), cache):
        assert np.all(np.isfinite(bk.to_numpy(g))) and np.all(bk.to_numpy(g)[1] == 0)


def test_kernel_selection_errors():
    with pytest.raises(ConfigError, match="unknown attention kernel 'flsh' \\(did you mean 'flash'\\?\\)"):
        get_attention_kernel("flsh", make_backend("numpy"))
    with pytest.raises(ConfigError, match="attention kernel 'sdpa' runs on the torch backend"):
        get_attention_kernel("sdpa", make_backend("numpy"))
    retired = r"^attention kernel 'cpu-softmax' was replaced by 'cpu-tiled'; use that name$"
    with pytest.raises(ConfigError, match=retired):
        get_attention_kernel("cpu-softmax", make_backend("numpy"))


def test_model_trains_the_same_with_every_kernel(backend_id):
    """The kernel is an implementation detail: one GPT step gives the same loss and gradients with each."""
    from llmscratch.models import GPT, GPTConfig

    bk = make_backend(backend_id, "float64")
    x = np.random.default_rng(0).integers(0, 11, (2, 9))
    results = {}
    for kernel in ATTENTION_KERNELS:
        if not KERNELS[kernel].runs_on(bk.name) or kernel in ("sdpa-efficient", "sdpa-cudnn"):
            continue
        model = GPT(GPTConfig(vocab_size=11, block_size=9, n_layer=1, n_head=2, n_embd=8), bk, attention=kernel)
        _, loss = model.forward(x, x)
        results[kernel] = (bk.item(loss), {n: bk.to_numpy(g) for n, g in model.backward().items()})
    loss_ref, grads_ref = results.pop("naive")
    for kernel, (loss, grads) in results.items():
        assert abs(loss - loss_ref) <= 1e-12, kernel
        for n in grads:
            assert rel_err(grads[n], grads_ref[n]) <= 1e-10, (kernel, n)
