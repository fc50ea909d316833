"""The encoder classifier and the encoder–decoder against torch.nn.TransformerEncoder / torch.nn.Transformer
built from the same weights (float64: outputs and every gradient ≤ 1e-10), on every backend; cached decoding
against the uncached forward; attention maps."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend, rel_err

from llmscratch.generation.search import translate_ids
from llmscratch.models import GPT, EncoderClassifier, ModelConfig, Seq2Seq

torch = pytest.importorskip("torch")
from llmscratch.reference.torch_transformer import build_reference, grads_as_ours  # noqa: E402

BASE = dict(block_size=11, n_layer=2, n_head=4, n_embd=16, n_inner=24, bias=True)
ENCODER_VARIANTS = {
    "post_ln_relu_cls": dict(norm_first=False, mlp="relu", pooling="cls"),
    "post_ln_gelu_mean": dict(norm_first=False, mlp="gelu_exact", pooling="mean"),
    "pre_ln_gelu_mean_sinusoidal": dict(norm_first=True, mlp="gelu_exact", pooling="mean", pos="sinusoidal"),
    "pre_ln_relu_cls_no_bias": dict(norm_first=True, mlp="relu", pooling="cls", bias=False),
}
SEQ2SEQ_VARIANTS = {
    "post_ln_relu": dict(norm_first=False, mlp="relu", final_norm=True),
    "pre_ln_gelu_untied": dict(norm_first=True, mlp="gelu_exact", tie_embeddings=False),
    "pre_ln_relu_separate_vocab_3_decoder_layers": dict(mlp="relu", src_vocab_size=9, n_decoder_layer=3),
    "post_ln_gelu_sinusoidal_no_bias": dict(
        norm_first=False, mlp="gelu_exact", final_norm=True, pos="sinusoidal", bias=False
    ),
}


def padded(rng, B, T, V, lengths):
    ids = rng.integers(0, V, (B, T))
    mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    return np.where(mask, ids, 0), mask


def host(bk, arrays):
    return {n: bk.to_numpy(a) for n, a in arrays.items()}


def compare(bk, logits, loss, grads, ref_logits, ref_loss, ref_grads, tol=1e-10):
    assert rel_err(bk.to_numpy(logits), ref_logits.detach().numpy()) <= tol
    assert abs(bk.item(loss) - ref_loss.item()) <= tol
    assert set(grads) == set(ref_grads)
    for name, g in grads.items():
        assert rel_err(bk.to_numpy(g), ref_grads[name]) <= tol, name


@pytest.mark.parametrize("variant", ENCODER_VARIANTS)
def test_encoder_matches_torch_transformer_encoder(bk64, variant):
    cfg = ModelConfig(kind="encoder", vocab_size=13, n_classes=3, **(BASE | ENCODER_VARIANTS[variant]))
    model = EncoderClassifier(cfg, bk64, seed=1)
    rng = np.random.default_rng(0)
    idx, mask = padded(rng, 4, 9, 13, [9, 5, 1, 7])
    labels = np.array([0, 2, 1, 2])
    logits, loss = model.forward(idx, labels, key_mask=mask)
    grads = model.backward()

    ref = build_reference(cfg, host(bk64, model.params))
    ref_logits, ref_loss = ref(torch.tensor(idx), torch.tensor(labels), torch.tensor(mask))
    ref_loss.backward()
    compare(bk64, logits, loss, grads, ref_logits, ref_loss, grads_as_ours(cfg, ref))


@pytest.mark.parametrize("variant", SEQ2SEQ_VARIANTS)
def test_seq2seq_matches_torch_transformer(bk64, variant):
    cfg = ModelConfig(kind="seq2seq", vocab_size=12, **(BASE | SEQ2SEQ_VARIANTS[variant]))
    model = Seq2Seq(cfg, bk64, seed=2)
    rng = np.random.default_rng(1)
    src, src_mask = padded(rng, 3, 8, cfg.source_vocab, [8, 3, 6])
    tgt, tgt_mask = padded(rng, 3, 7, 12, [7, 4, 2])
    targets = np.where(tgt_mask, rng.integers(0, 12, (3, 7)), -100)
    logits, loss = model.forward(src, tgt, targets, src_mask=src_mask, tgt_mask=tgt_mask)
    grads = model.backward()

    ref = build_reference(cfg, host(bk64, model.params))
    ref_logits, ref_loss = ref(*(torch.tensor(a) for a in (src, tgt, targets, src_mask, tgt_mask)))
    ref_loss.backward()
    compare(bk64, logits, loss, grads, ref_logits, ref_loss, grads_as_ours(cfg, ref))


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("kind", ["encoder", "seq2seq"])
def test_one_step_same_on_every_backend(backend_id, kind, dtype, tol):
    """GQA and RoPE too (no torch.nn layer has them): the backends against NumPy."""
    cfg = ModelConfig(kind=kind, vocab_size=10, n_kv_head=2, pos="rope", mlp="swiglu", pooling="mean", **BASE)
    rng = np.random.default_rng(3)
    src, src_mask = padded(rng, 2, 6, 10, [6, 3])
    tgt, _ = padded(rng, 2, 5, 10, [5, 5])
    results = []
    for bk in (make_backend(backend_id, dtype), make_backend("numpy", dtype)):
        if kind == "encoder":
            model = EncoderClassifier(cfg, bk, seed=4)
            logits, loss = model.forward(src, np.array([1, 0]), key_mask=src_mask)
        else:
            model = Seq2Seq(cfg, bk, seed=4)
            logits, loss = model.forward(src, tgt, tgt, src_mask=src_mask)
        results.append((bk.to_numpy(logits), bk.item(loss), host(bk, model.backward())))
    (logits, loss, grads), (ref_logits, ref_loss, ref_grads) = results
    assert rel_err(logits, ref_logits) <= tol
    assert abs(loss - ref_loss) <= tol * abs(ref_loss)
    for name in grads:
        assert rel_err(grads[name], ref_grads[name]) <= tol, name


@pytest.mark.parametrize("options", [{}, dict(pos="rope", n_kv_head=2), dict(pos="sinusoidal", norm_first=False)])
def test_cached_decoding_equals_the_uncached_forward(options):
    """Feeding the target one token at a time (decoder KV cache, encoder keys/values computed once) gives the
    logits of the teacher-forced forward, float64 ≤ 1e-10."""
    bk = make_backend("numpy", "float64")
    cfg = ModelConfig(kind="seq2seq", vocab_size=12, **(BASE | options))
    model = Seq2Seq(cfg, bk, seed=5)
    model.training = False
    rng = np.random.default_rng(2)
    src, src_mask = padded(rng, 2, 7, 12, [7, 4])
    tgt = rng.integers(0, 12, (2, 6))
    full, _ = model.forward(src, tgt, src_mask=src_mask)
    state = model.start(src, src_mask)
    steps = [bk.to_numpy(model.step(state, tgt[:, t : t + 1])) for t in range(6)]
    assert rel_err(np.concatenate(steps, axis=1), bk.to_numpy(full)) <= 1e-10


def test_translation_runs_the_encoder_once_per_input(monkeypatch):
    bk = make_backend("numpy", "float64")
    model = Seq2Seq(ModelConfig(kind="seq2seq", vocab_size=12, **BASE), bk, seed=6)
    calls = []
    original = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    out = translate_ids(model, [[1, 2, 3], [4, 5]], bos=10, eos=11, pad_id=0)
    assert len(calls) == 1
    assert len(out) == 2 and all(1 <= len(o) <= BASE["block_size"] for o in out)
    # greedy is the argmax of the uncached forward at every step
    row = out[0]
    logits, _ = model.forward(np.array([[1, 2, 3]]), np.array([[10, *row[:-1]]]))
    assert np.argmax(bk.to_numpy(logits)[0], axis=-1).tolist() == row


def test_attention_maps_are_probabilities():
    bk = make_backend("numpy", "float64")
    gpt = GPT(ModelConfig(vocab_size=12, **BASE), bk)
    maps = gpt.attention_maps(np.array([[1, 2, 3, 4, 5]]))
    assert list(maps) == ["transformer.h.0.attn", "transformer.h.1.attn"]
    for p in maps.values():
        assert p.shape == (4, 5, 5)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
        assert np.all(np.triu(p, 1) == 0)  # causal: no weight on later tokens

    enc = EncoderClassifier(ModelConfig(kind="encoder", vocab_size=12, **BASE), bk)
    p = enc.attention_maps(np.array([[1, 2, 3, 0]]), key_mask=np.array([[1, 1, 1, 0]]))["encoder.h.1.attn"]
    assert p.shape == (4, 4, 4) and np.all(p[..., 3] == 0) and np.all(p[..., :3] > 0)

    s2s = Seq2Seq(ModelConfig(kind="seq2seq", vocab_size=12, **BASE), bk)
    maps = s2s.attention_maps(np.array([[1, 2, 3]]), np.array([[4, 5]]))
    assert maps["encoder.h.0.attn"].shape == (4, 3, 3)
    assert maps["decoder.h.0.attn"].shape == (4, 2, 2)
    assert maps["decoder.h.1.cross_attn"].shape == (4, 2, 3)
    np.testing.assert_allclose(maps["decoder.h.1.cross_attn"].sum(-1), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(vocab_size=13, pos="rope", **BASE),
        ModelConfig(kind="encoder", vocab_size=13, n_classes=3, **(BASE | ENCODER_VARIANTS["post_ln_relu_cls"])),
        ModelConfig(
            kind="seq2seq", vocab_size=13, **(BASE | SEQ2SEQ_VARIANTS["pre_ln_relu_separate_vocab_3_decoder_layers"])
        ),
    ],
    ids=["gpt", "encoder", "seq2seq"],
)
def test_parameter_shapes_come_from_the_config_alone(cfg, monkeypatch):
    """specs_for builds no backend, kernel or weights, and names the very shapes a built model's parameters have."""
    from llmscratch.models import base, model_class

    built = model_class(cfg.kind)(cfg, "numpy", seed=0)
    for name in ("get_backend", "get_attention_kernel", "get_ops", "draw_params"):
        monkeypatch.setattr(base, name, lambda *a, **k: pytest.fail("specs_for reached a backend or drew weights"))
    specs = model_class(cfg.kind).specs_for(cfg)
    assert list(specs) == list(built.params)
    assert {n: shape for n, (shape, _) in specs.items()} == {n: tuple(p.shape) for n, p in built.params.items()}
