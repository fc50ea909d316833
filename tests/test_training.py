"""Training: parity with PyTorch over 10 AdamW steps (as llm.c tests its C code), the schedule, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_backend, tiny

import llmscratch
from llmscratch.data.batches import get_batch
from llmscratch.kernels import cpu_build, get_ops
from llmscratch.models import GPT, GPTConfig
from llmscratch.training.optimizer import AdamW, clip_grad_norm, learning_rate

torch = pytest.importorskip("torch")
from llmscratch.reference.torch_gpt import TorchGPT  # noqa: E402


def nanogpt_lr(it, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000):
    """nanoGPT's train.py get_lr, transcribed."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def test_learning_rate_schedule_is_nanogpts():
    for it in [0, 1, 50, 99, 100, 101, 500, 1000, 1999, 2000, 2001, 5000]:
        assert learning_rate(it, 1e-3, 1e-4, 100, 2000) == pytest.approx(nanogpt_lr(it), rel=1e-15)


@pytest.mark.parametrize(
    "backend_id, op_set, clip_in_step",
    [
        ("numpy", "array-api", False),
        ("torch", "array-api", False),
        ("strict", "array-api", False),
        ("strict", "array-api", True),
        ("numpy", "cpu-fused", True),
        ("torch", "cpu-fused", True),
    ],
)
def test_ten_adamw_steps_match_pytorch(backend_id, op_set, clip_in_step):
    """Same weights, same batches, AdamW with decay groups, clipping and warmup: losses equal to 1e-10. Clipping
    by clip_grad_norm, or folded into opt.step (max_grad_norm) with the op set's norm and update."""
    cfg = GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True)
    bk = make_backend(backend_id, "float64")
    if op_set == "cpu-fused" and (reason := cpu_build.unavailable(bk)):
        pytest.skip(reason)
    ops = get_ops(op_set, bk)
    model = GPT(cfg, bk, seed=5)
    opt = AdamW(bk, model.params, 1e-2, (0.9, 0.95), weight_decay=0.1, update=ops.adamw_update, norm=ops.grad_norm)
    ref = TorchGPT.from_params(cfg, {n: bk.to_numpy(p) for n, p in model.params.items()})
    ref_opt = ref.configure_optimizer(0.1, 1e-2, (0.9, 0.95))
    tokens = np.random.default_rng(0).integers(0, 23, 500)
    for step in range(10):
        lr = learning_rate(step, 1e-2, 1e-3, 3, 10)
        x, y = get_batch(tokens, 4, 8, 0, step)
        _, loss = model.forward(x, y)
        grads = model.backward()
        if clip_in_step:
            opt.step(grads, lr, max_grad_norm=0.5)  # small enough to clip on some steps
        else:
            clip_grad_norm(bk, grads, 0.5)
            opt.step(grads, lr)

        for group in ref_opt.param_groups:
            group["lr"] = lr
        _, ref_loss = ref(torch.tensor(x), torch.tensor(y))
        ref_opt.zero_grad()
        ref_loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_opt.step()
        assert abs(bk.item(loss) - ref_loss.item()) <= 1e-10, f"step {step}"
    final = ref.grads_as_ours()  # names only; compare the parameters themselves
    for name in final:
        p = ref.get_parameter(name).detach().numpy()
        p = p.T if TorchGPT._is_linear_weight(name) else p
        np.testing.assert_allclose(bk.to_numpy(model.params[name]), p, rtol=0, atol=1e-10, err_msg=name)


def test_clip_grad_norm_scales_to_the_limit():
    bk = make_backend("numpy", "float64")
    grads = {"a": bk.from_numpy(np.array([3.0, 0.0])), "b": bk.from_numpy(np.array([[4.0]]))}
    norm = clip_grad_norm(bk, grads, 1.0)
    assert bk.item(norm) == pytest.approx(5.0)
    total = math.sqrt(sum(float(np.sum(bk.to_numpy(g) ** 2)) for g in grads.values()))
    assert total == pytest.approx(1.0, rel=1e-6)


TINY = tiny(
    n_layer=2,
    eval_iters=2,
    log_interval=3,
    warmup_iters=2,
    lr_decay_iters=12,
    learning_rate=3e-3,
)


@pytest.mark.parametrize("backend, compile", [("numpy", False), ("torch", False), ("jax", False), ("jax", True)])
def test_resume_is_bit_identical(tmp_path, backend, compile):
    """N steps, checkpoint, restart, N more == 2N uninterrupted: same parameters, same losses, bit for bit.
    Dropout and gradient accumulation are on, so their random streams must resume exactly too."""
    pytest.importorskip(backend)
    opts = dict(TINY, backend=backend, dropout=0.1, gradient_accumulation_steps=2, eval_interval=5, progress=False)
    opts["compile"] = compile
    whole = llmscratch.train(max_iters=10, out_dir=str(tmp_path / "whole"), **opts)
    first = llmscratch.train(max_iters=5, out_dir=str(tmp_path / "split"), **opts)
    assert first.history[-1]["step"] == 5
    second = llmscratch.train(max_iters=10, out_dir=str(tmp_path / "split"), resume=True, **opts)
    for name, p in whole.model.params.items():
        np.testing.assert_array_equal(whole.model.bk.to_numpy(p), second.model.bk.to_numpy(second.model.params[name]))

    def losses(history):  # everything but the wall-clock throughput
        return [{k: v for k, v in h.items() if k != "tokens_per_s"} for h in history]

    assert losses(second.history) == losses(whole.history)


def test_training_reduces_the_loss_and_samples(tmp_path):
    result = llmscratch.train(max_iters=40, eval_interval=20, progress=False, **TINY | {"lr_decay_iters": 40})
    vals = [h["val_loss"] for h in result.history if h["val_loss"] is not None]
    assert len(vals) == 3 and vals[-1] < vals[0] - 0.5
    assert [h["step"] for h in result.history if h["train_loss"] is not None] == list(range(40))
    assert all(h["tokens_per_s"] > 0 for h in result.history if h["train_loss"] is not None)
    assert result.checkpoint_dir is None  # no out_dir: nothing written
    text = result.sample("def ", 30, seed=1)
    assert text.startswith("def ") and len(text) == 34


def test_gradient_accumulation_equals_a_big_batch():
    """Two micro-batches of 4 with loss/2 give the gradient of one batch of 8 made of both."""
    cfg = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8)
    bk = make_backend("numpy", "float64")
    model = GPT(cfg, bk)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 11, (8, 6)), rng.integers(0, 11, (8, 6))
    model.forward(x, y)
    big = model.backward()
    acc = None
    for half in (slice(0, 4), slice(4, 8)):
        model.forward(x[half], y[half])
        g = model.backward(dloss=0.5)
        acc = g if acc is None else {n: acc[n] + g[n] for n in g}
    for n in big:
        np.testing.assert_allclose(acc[n], big[n], rtol=1e-12, atol=1e-15)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns as the weights overflow: that is the point
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(
        llmscratch.util.errors.TrainingDivergedError, match=r"loss became nan at step \d+; the last good checkpoint is"
    ):
        llmscratch.train(
            max_iters=30,
            eval_interval=100,
            out_dir=str(out),
            progress=False,
            **TINY | {"learning_rate": 1e6, "grad_clip": 0.0, "warmup_iters": 0},
        )
    ckpt = llmscratch.load(out)
    assert ckpt.step == 0  # the step-0 checkpoint, written before the divergence
    assert all(np.isfinite(ckpt.model.bk.to_numpy(p)).all() for p in ckpt.model.params.values())


def test_model_config_cannot_change_on_resume(tmp_path):
    out = str(tmp_path / "run")
    llmscratch.train(max_iters=2, eval_interval=1, out_dir=out, progress=False, **TINY)
    with pytest.raises(llmscratch.util.errors.ConfigError, match="the model cannot change when resuming \\(n_layer"):
        llmscratch.train(max_iters=4, out_dir=out, resume=True, progress=False, **TINY | {"n_layer": 3})
