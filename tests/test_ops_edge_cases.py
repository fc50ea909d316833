"""What the op table cannot express: bad input, fully masked rows, all-ignored targets, dropout statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmscratch import ops
from llmscratch.util.errors import DataError, ShapeError


def test_linear_shape_mismatch_says_which(bk64):
    x, w = bk64.zeros((2, 3, 5)), bk64.zeros((4, 6))
    with pytest.raises(ShapeError, match=r"linear_forward: x has 5 features but w is 4x6"):
        ops.linear_forward(bk64, x, w)
    with pytest.raises(ShapeError, match=r"linear_forward: b must be \(6,\)"):
        ops.linear_forward(bk64, bk64.zeros((2, 4)), w, bk64.zeros((5,)))


def test_norm_weight_mismatch(bk64):
    with pytest.raises(ShapeError, match=r"layernorm_forward: w must be \(5,\)"):
        ops.layernorm_forward(bk64, bk64.zeros((2, 5)), bk64.zeros((4,)))
    with pytest.raises(ShapeError, match=r"rmsnorm_forward: w must be \(5,\)"):
        ops.rmsnorm_forward(bk64, bk64.zeros((2, 5)), bk64.zeros((4,)))


def test_attention_shape_errors(bk64):
    q = bk64.zeros((2, 4, 7, 8))
    with pytest.raises(ShapeError, match=r"query heads \(4\) must be a multiple of kv heads \(3\)"):
        ops.attention_forward(bk64, q, bk64.zeros((2, 3, 7, 8)), bk64.zeros((2, 3, 7, 8)))
    with pytest.raises(ShapeError, match=r"k \(2, 2, 7, 6\) must be \(B=2, Hkv, S, D=8\)"):
        ops.attention_forward(bk64, q, bk64.zeros((2, 2, 7, 6)), bk64.zeros((2, 2, 7, 6)))
    with pytest.raises(ShapeError, match=r"key_mask must be \(B=2, S=7\)"):
        ops.attention_forward(bk64, q, q, q, key_mask=bk64.from_numpy(np.ones((2, 6), dtype=bool)))


def test_embedding_id_out_of_range(bk64):
    w = bk64.zeros((5, 3))
    message = r"embedding_forward: id 5 is out of range for a vocabulary of 5 \(valid: 0\.\.4\)"
    with pytest.raises(DataError, match=message):
        ops.embedding_forward(bk64, bk64.from_numpy(np.array([[0, 5]])), w)
    with pytest.raises(DataError, match="id -1 is out of range"):
        ops.embedding_forward(bk64, bk64.from_numpy(np.array([[-1, 2]])), w)
    with pytest.raises(ShapeError, match="ids must be integers"):
        ops.embedding_forward(bk64, bk64.zeros((1, 2)), w)


def test_cross_entropy_bad_targets(bk64):
    logits = bk64.zeros((2, 3, 4))
    with pytest.raises(ShapeError, match=r"targets \(2, 2\) must match logits \(2, 3, 4\)"):
        ops.cross_entropy_forward(bk64, logits, bk64.from_numpy(np.zeros((2, 2), dtype=np.int64)))
    with pytest.raises(DataError, match="cross_entropy_forward: id 4 is out of range"):
        ops.cross_entropy_forward(bk64, logits, bk64.from_numpy(np.array([[0, 1, 4], [0, 0, 0]])))


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient(bk64):
    logits = bk64.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 4)))
    loss, cache = ops.cross_entropy_forward(bk64, logits, bk64.from_numpy(np.full((2, 3), -1)), ignore_index=-1)
    assert bk64.item(loss) == 0.0
    assert np.all(bk64.to_numpy(ops.cross_entropy_backward(bk64, 1.0, cache)) == 0.0)


def test_cross_entropy_is_stable_for_huge_logits(bk32):
    z = np.array([[1e4, 0.0, -1e4], [-3e4, 3e4, 0.0]])
    loss, cache = ops.cross_entropy_forward(bk32, bk32.from_numpy(z), bk32.from_numpy(np.array([0, 0])))
    assert bk32.item(loss) == pytest.approx(3e4, rel=1e-6)
    assert np.all(np.isfinite(bk32.to_numpy(ops.cross_entropy_backward(bk32, 1.0, cache))))


def test_softmax_of_an_all_masked_row_is_zero(bk64):
    x = bk64.from_numpy(np.array([[-math.inf] * 3, [0.0, -math.inf, 0.0]]))
    p, cache = ops.softmax_forward(bk64, x)
    np.testing.assert_array_equal(bk64.to_numpy(p), [[0, 0, 0], [0.5, 0, 0.5]])
    dx = ops.softmax_backward(bk64, bk64.from_numpy(np.ones((2, 3))), cache)
    assert np.all(np.isfinite(bk64.to_numpy(dx)))


def test_attention_fully_padded_row_gives_zeros_not_nan(bk64):
    rng = np.random.default_rng(0)
    q, k, v = (bk64.from_numpy(rng.standard_normal((2, 2, 4, 3))) for _ in range(3))
    key_mask = np.ones((2, 4), dtype=bool)
    key_mask[1] = False
    out, cache = ops.attention_forward(bk64, q, k, v, causal=False, key_mask=bk64.from_numpy(key_mask))
    out = bk64.to_numpy(out)
    assert np.all(out[1] == 0.0) and np.all(np.isfinite(out))
    grads = ops.attention_backward(bk64, bk64.from_numpy(np.ones((2, 2, 4, 3))), cache)
    for g in grads:
        g = bk64.to_numpy(g)
        assert np.all(np.isfinite(g)) and np.all(g[1] == 0.0)


def test_dropout_statistics_and_seed(bk32):
    x = bk32.from_numpy(np.ones((200, 500)))
    out, mask = ops.dropout_forward(bk32, x, 0.25, bk32.generator(1, 2))
    out = bk32.to_numpy(out)
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert abs(out.mean() - 1.0) < 0.02  # inverted dropout preserves the expectation
    again, _ = ops.dropout_forward(bk32, x, 0.25, bk32.generator(1, 2))
    np.testing.assert_array_equal(bk32.to_numpy(again), out)
    other, _ = ops.dropout_forward(bk32, x, 0.25, bk32.generator(1, 3))
    assert not np.array_equal(bk32.to_numpy(other), out)
    np.testing.assert_array_equal(bk32.to_numpy(ops.dropout_backward(bk32, x, mask)), out)


def test_dropout_zero_is_identity_and_bad_p(bk32):
    x = bk32.from_numpy(np.ones(4))
    out, cache = ops.dropout_forward(bk32, x, 0.0, None)
    assert out is x and cache is None
    with pytest.raises(ShapeError, match=r"p must be in \[0, 1\), got 1.0"):
        ops.dropout_forward(bk32, x, 1.0, None)


def test_gelu_unknown_form(bk32):
    with pytest.raises(ShapeError, match="form must be one of"):
        ops.gelu_forward(bk32, bk32.zeros((2,)), "sigmoid")


def test_swiglu_odd_width_and_extreme_inputs(bk32):
    with pytest.raises(ShapeError, match="must be even, got 5"):
        ops.swiglu_forward(bk32, bk32.zeros((2, 5)))
    h = bk32.from_numpy(np.array([[-1e4, 1e4, 2.0, 3.0]]))
    out, cache = ops.swiglu_forward(bk32, h)
    dh = ops.swiglu_backward(bk32, bk32.from_numpy(np.ones((1, 2))), cache)
    assert np.all(np.isfinite(bk32.to_numpy(out))) and np.all(np.isfinite(bk32.to_numpy(dh)))


def test_rope_rejects_odd_head_dim(bk32):
    with pytest.raises(ShapeError, match="head dim must be even"):
        ops.rope_tables(bk32, 4, 5)
