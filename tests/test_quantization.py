"""Weight-only int8 / int4 quantization: the format against a plain loop over groups, the product against
x @ ŵ in float64, models and checkpoints quantized on every backend, and the errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import make_backend, shakespeare_or_stdlib, tiny
from test_hf_interop import gpt2_with_tokenizer, run_cli

import llmscratch
from llmscratch import GPT, EncoderClassifier, GPTConfig, ModelConfig, Seq2Seq, ops
from llmscratch.models.quantized import linear_weights
from llmscratch.ops.quantize import ROWS
from llmscratch.training.checkpoint import convert
from llmscratch.util.errors import CheckpointError, ConfigError
from llmscratch.util.tensors import read_safetensors, tensors_to_bytes

QMAX = {"int8": 127, "int4": 7}


def by_loops(w: np.ndarray, fmt: str, group: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ŵ, the scale of each weight) computed one group of one column at a time."""
    C, OC = w.shape
    G = group or C
    w_hat, step = np.zeros_like(w), np.zeros_like(w)
    for j in range(OC):
        for g0 in range(0, C, G):
            block = w[g0 : g0 + G, j]
            s = np.abs(block).max() / QMAX[fmt]
            q = np.zeros_like(block) if s == 0 else np.clip(np.round(block / s), -QMAX[fmt], QMAX[fmt])
            w_hat[g0 : g0 + G, j], step[g0 : g0 + G, j] = q * s, s
    return w_hat, step


FORMATS = [("int8", None), ("int4", 32), ("int4", 6), ("int4", 2)]


@pytest.mark.parametrize("fmt, group", FORMATS)
def test_dequantized_weight_is_the_loop_over_groups_within_half_a_step(bk64, fmt, group):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((45, 19))  # 45 inputs: not a multiple of any group, odd for the int4 pairs
    w[:, 3] = 0.0  # an all-zero column: q = 0, no division by a zero scale
    w[7, 5] = 40.0  # one large value: its group's small weights round to few levels
    qw = ops.quantize_weight(bk64, bk64.from_numpy(w), fmt, group)
    w_hat = bk64.to_numpy(ops.dequantize(bk64, qw))
    expected, step = by_loops(w, fmt, group)
    assert qw.shape == w.shape and w_hat.shape == w.shape
    np.testing.assert_allclose(w_hat, expected, rtol=1e-12, atol=1e-15)
    assert np.all(np.abs(w_hat - w) <= step / 2 * (1 + 1e-12))
    assert np.all(w_hat[:, 3] == 0.0)


@pytest.mark.parametrize("fmt, group", FORMATS)
def test_representable_weights_come_back_exactly(bk64, fmt, group):
    """w = q · s with integer q and each group's largest |q| = qmax: quantizing finds s and q again."""
    rng = np.random.default_rng(1)
    C, OC, qmax = 40, 9, QMAX[fmt]
    G = group or C
    q = rng.integers(-qmax, qmax + 1, size=(C, OC)).astype(np.float64)
    q[::G, :] = qmax  # every group holds ±qmax, so its scale is exactly s
    s = 2.0 ** rng.integers(-6, 2, size=(-(-C // G), OC))
    w = q * np.repeat(s, G, axis=0)[:C]
    qw = ops.quantize_weight(bk64, bk64.from_numpy(w), fmt, group)
    assert np.array_equal(bk64.to_numpy(ops.dequantize(bk64, qw)), w)


def test_int4_layout_is_two_offset_nibbles_a_byte():
    bk = make_backend("numpy")
    q = np.array([[-7, 7], [0, 1], [3, -1], [-2, 5]], dtype=np.float64)  # scale 1 in column 0 and 1
    qw = ops.quantize_weight(bk, bk.from_numpy(q), "int4", 4)
    stored = bk.to_numpy(qw.q)
    assert stored.dtype == np.uint8 and stored.shape == (2, 2)
    low, high = (stored & 15).astype(int) - 8, (stored >> 4).astype(int) - 8
    assert np.array_equal(low, q[0::2]) and np.array_equal(high, q[1::2])
    int8 = ops.quantize_weight(bk, bk.from_numpy(q), "int8")
    assert bk.to_numpy(int8.q).dtype == np.int8 and bk.to_numpy(int8.scale).shape == (1, 2)


@pytest.mark.parametrize("fmt, group", FORMATS)
def test_product_equals_x_times_the_dequantized_weight(backend_id, fmt, group):
    """More rows than one block of the reference (ROWS), a C that no group divides, an odd N, a bias."""
    rng = np.random.default_rng(2)
    C, N = ROWS + 77, 37
    w, x, b = rng.standard_normal((C, N)), rng.standard_normal((5, C)), rng.standard_normal(N)
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        bk = make_backend(backend_id, dtype)
        qw = ops.quantize_weight(bk, bk.from_numpy(w), fmt, group)
        w_hat = bk.to_numpy(ops.dequantize(bk, qw)).astype(np.float64)
        out = bk.to_numpy(ops.quantized_matmul(bk, bk.from_numpy(x), qw, bk.from_numpy(b)))
        expected = x @ w_hat + b
        assert np.abs(out - expected).max() <= tol * np.abs(expected).max()


def models(bk):
    """Untied heads, so that the float twin can hold the head's ŵ without changing the embedding's rows."""
    base = dict(n_layer=2, n_head=2, n_embd=24, block_size=12, tie_embeddings=False)
    yield GPT(GPTConfig(vocab_size=30, **base), bk, seed=1), lambda m, ids: m.forward(ids)[0]
    encoder = ModelConfig(kind="encoder", vocab_size=30, n_classes=3, **base)
    yield EncoderClassifier(encoder, bk, seed=2), lambda m, ids: m.forward(ids)[0]
    seq2seq = ModelConfig(kind="seq2seq", vocab_size=30, **base)
    yield Seq2Seq(seq2seq, bk, seed=3), lambda m, ids: m.forward(ids, ids)[0]


@pytest.mark.parametrize("fmt, group", [("int8", None), ("int4", 8)])
def test_every_model_runs_its_quantized_weights(bk64, fmt, group):
    """Each model kind, quantized, gives the logits of the float model holding ŵ; every Linear (and nothing
    else) is quantized, once."""
    ids = np.arange(24).reshape(2, 12) % 30
    for model, logits_of in models(bk64):
        float_logits = bk64.to_numpy(logits_of(model, ids))
        llmscratch.quantize(model, fmt, group)
        names = linear_weights(model.layers)
        quantized = [n for n, p in model.params.items() if isinstance(p, ops.QuantizedWeight)]
        assert quantized == names and len(names) >= 8
        assert model.quantization == {"format": fmt, "group": group}
        heads = model.rt.quantized_heads
        assert len(heads) == (0 if isinstance(model, EncoderClassifier) else 1)
        w_hat = {n: ops.dequantize(bk64, p) if n in names else p for n, p in model.params.items()}
        for name, head in heads.items():  # the head's copy: Wᵀ quantized, W itself kept float
            W = model.params[name]
            expected = ops.quantize_weight(bk64, bk64.xp.matrix_transpose(W), fmt, group)
            assert np.array_equal(bk64.to_numpy(head.q), bk64.to_numpy(expected.q))
            w_hat[name] = bk64.xp.matrix_transpose(ops.dequantize(bk64, head))
        twin = type(model)(model.config, bk64, params=w_hat)
        q_logits = bk64.to_numpy(logits_of(model, ids))
        np.testing.assert_allclose(q_logits, bk64.to_numpy(logits_of(twin, ids)), rtol=1e-10, atol=1e-12)
        assert 0 < np.abs(q_logits - float_logits).max() < (0.05 if fmt == "int8" else 0.5)
        with pytest.raises(ConfigError, match="already quantized"):
            llmscratch.quantize(model, "int4")


def test_a_tied_head_reads_its_quantized_copy_and_the_lookup_stays_float(bk64):
    cfg = GPTConfig(vocab_size=30, n_layer=1, n_head=2, n_embd=16, block_size=8)
    model = GPT(cfg, bk64, seed=5)
    W = bk64.to_numpy(model.params["transformer.wte.weight"])
    llmscratch.quantize(model, "int4", 8)
    assert np.array_equal(bk64.to_numpy(model.params["transformer.wte.weight"]), W)  # lookups read float rows
    head = model.rt.quantized_heads["transformer.wte.weight"]
    x = np.random.default_rng(0).standard_normal((3, 16))
    logits = bk64.to_numpy(ops.quantized_matmul(bk64, bk64.from_numpy(x), head))
    np.testing.assert_allclose(logits, x @ bk64.to_numpy(ops.dequantize(bk64, head)), rtol=1e-12)
    assert np.abs(bk64.to_numpy(ops.dequantize(bk64, head)) - W.T).max() > 0


def test_a_quantized_model_refuses_its_backward(bk64):
    model = GPT(GPTConfig(vocab_size=30, n_layer=1, n_head=2, n_embd=16, block_size=8), bk64)
    llmscratch.quantize(model, "int8")
    ids = np.arange(8)[None, :]
    model.forward(ids, ids)
    with pytest.raises(ConfigError, match="quantization is for inference"):
        model.backward()


@pytest.mark.parametrize(
    "fmt, group, message",
    [
        ("int3", None, "unknown quantization 'int3'; choose from int8, int4"),
        ("int4", 33, "two values a byte, so its group must be even, got 33"),
        ("int4", 0, "group must be a positive number"),
    ],
)
def test_bad_formats_are_one_line(fmt, group, message):
    model = GPT(GPTConfig(vocab_size=30, n_layer=1, n_head=2, n_embd=16, block_size=8), "numpy")
    with pytest.raises(ConfigError, match=message):
        llmscratch.quantize(model, fmt, group)
    assert model.quantization is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "out"
    llmscratch.train(**tiny(max_iters=20, eval_iters=1, out_dir=str(out), n_embd=32, n_layer=2), progress=False)
    return out


def test_quantized_checkpoint_round_trips_and_samples_alike_everywhere(trained, tmp_path):
    """convert --quantize int4 writes integers and scales; load reads them back as they were (no second
    rounding), and every backend samples the same greedy tokens as quantizing on load."""
    dst = tmp_path / "q4"
    code, _, err = run_cli("convert", str(trained), str(dst), "--to", "llmscratch", "--quantize", "int4")
    assert code == 0, err
    on_load = llmscratch.load(trained, quantize="int4")
    written = llmscratch.load(dst)
    assert written.model.quantization == {"format": "int4", "group": 32}
    files = read_safetensors(next(dst.glob("ckpt-*")) / "model.safetensors")
    for name, p in on_load.model.params.items():
        if isinstance(p, ops.QuantizedWeight):
            assert files[name].dtype == np.uint8 and np.array_equal(files[name], p.q)
            assert np.array_equal(files[name + ".scale"], p.scale)
    expected = on_load.sample("\n", 20, temperature=0)
    assert written.sample("\n", 20, temperature=0) == expected
    for name in ("torch", "jax", "strict"):
        try:
            ck = llmscratch.load(dst, backend=name)
        except llmscratch.LLMScratchError as e:
            pytest.skip(str(e))
        assert ck.sample("\n", 20, temperature=0) == expected, name


def test_cli_commands_take_quantize_and_training_refuses_it(trained, tmp_path):
    code, out, err = run_cli(
        "sample", "--checkpoint", str(trained), "--quantize", "int8", "--max-new-tokens", "5", "--temperature", "0"
    )
    assert code == 0, err
    assert out == llmscratch.load(trained, quantize="int8").sample("", 5, temperature=0) + "\n"
    text = tmp_path / "val.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    code, out, err = run_cli("eval", "--checkpoint", str(trained), "--quantize", "int4", "--data", str(text))
    assert code == 0 and "val_loss" in out, err
    code, _, err = run_cli("train", "--quantize", "int8", "--out", str(tmp_path / "t"))
    assert code == 2 and "quantization is for inference" in err and len(err.strip().splitlines()) == 1
    dst = tmp_path / "q8"
    assert run_cli("convert", str(trained), str(dst), "--to", "llmscratch", "--quantize", "int8")[0] == 0
    code, _, err = run_cli("train", "--init-from", str(dst), "--out", str(tmp_path / "t2"), "--quiet")
    assert code == 2 and "it is quantized (int8); quantization is for inference" in err
    code, _, err = run_cli("convert", str(trained), str(tmp_path / "hf"), "--to", "hf", "--quantize", "int8")
    assert code == 2 and "use --to llmscratch" in err
    with pytest.raises(ConfigError, match="a Hugging Face directory holds float weights"):
        llmscratch.save_hf(llmscratch.load(dst), tmp_path / "hf2")
    code, _, err = run_cli("sample", "--checkpoint", str(dst), "--quantize", "int4")
    assert code == 2 and "already quantized (int8)" in err


def rewrite(ckpt, name: str, data: bytes) -> None:
    """A checkpoint file replaced, its digest with it: a file written wrong, not one damaged later."""
    (ckpt / name).write_bytes(data)
    digests = json.loads((ckpt / "digests.json").read_text())
    digests[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "digests.json").write_text(json.dumps(digests))


def test_a_quantized_weight_of_the_wrong_layout_is_named(trained, tmp_path):
    dst = tmp_path / "q8"
    convert(trained, dst, "llmscratch", quantize="int8")
    ckpt = next(dst.glob("ckpt-*"))
    tensors = read_safetensors(ckpt / "model.safetensors")
    name = "transformer.h.0.mlp.c_fc.weight"
    tensors[name] = np.ascontiguousarray(tensors[name][:-1])
    rewrite(ckpt, "model.safetensors", tensors_to_bytes(tensors))
    with pytest.raises(CheckpointError, match=f"quantized weight '{name}' does not have the layout of int8"):
        llmscratch.load(dst)
    del tensors[name], tensors[name + ".scale"]  # the altered weight gone, one the model has not in its place
    tensors["extra.weight"], tensors["extra.weight.scale"] = np.zeros((4, 4), np.int8), np.ones((1, 4), np.float32)
    rewrite(ckpt, "model.safetensors", tensors_to_bytes(tensors))
    with pytest.raises(CheckpointError, match=r"quantized weight 'extra\.weight' that the model does not"):
        llmscratch.load(dst)
    meta = json.loads((ckpt / "config.json").read_text())
    meta["quantization"] = {"format": "int2"}
    rewrite(ckpt, "config.json", json.dumps(meta).encode())
    with pytest.raises(CheckpointError, match=r"quantization record .* is not one this version reads"):
        llmscratch.load(dst)


def test_hugging_face_directories_quantize_on_load(tmp_path):
    path = gpt2_with_tokenizer(tmp_path / "hf", shakespeare_or_stdlib(20000))
    ck = llmscratch.load(path, quantize="int4", group=16)
    assert ck.model.quantization == {"format": "int4", "group": 16}
    full = llmscratch.load(path)
    ids = np.array([ck.tokenizer.encode("ROMEO: what")])
    q, f = ck.model.bk.to_numpy(ck.model.forward(ids)[0]), full.model.bk.to_numpy(full.model.forward(ids)[0])
    assert np.abs(q - f).max() < 0.1 * np.abs(f).max()
