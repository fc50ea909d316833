"""Mixed precision (llmscratch/training/precision.py): bf16 / fp16 compute on float32 master weights.

The ops themselves are checked in 16 bits against float64 in tests/test_ops.py (HALF_TOLERANCE). Here: the
config's checks, the loss scaler's rule, AdamW on master weights against plain float32 AdamW, what a checkpoint
keeps, exact resume, and overflows injected into the gradients (skip, shrink, regrow). The 2000-iteration
val-loss comparison with fp32 is tests/test_mixed_precision_convergence.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import safetensors.numpy
from conftest import make_backend, tiny

import llmscratch
from llmscratch.training.checkpoint import _checkpoint_dir
from llmscratch.training.config import resolve_config
from llmscratch.training.optimizer import AdamW
from llmscratch.training.precision import LossScaler
from llmscratch.training.trainer import Trainer
from llmscratch.util.errors import ConfigError

pytest.importorskip("torch")

HALF = ("bf16", "fp16")
SMALL = tiny(n_layer=2, n_embd=32, block_size=32, batch_size=8, eval_iters=2, log_interval=5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(backend="numpy", precision="bf16"),
            r"numpy backend has no bfloat16 .*use precision=fp32, or backend=torch or jax$",
        ),
        (dict(backend="numpy", precision="fp16"), r"numpy backend has no float16 .*backend=torch or cupy or jax$"),
        (
            dict(backend="cupy", precision="bf16"),
            r"cupy backend has no bfloat16 .*use precision=fp16, or backend=torch or jax$",
        ),
        (dict(backend="torch", precision="bf16", dtype="float64"), r"keeps float32 master weights.*not float64"),
        (dict(backend="torch", precision="fp8"), r"precision must be one of fp32, bf16, fp16, got 'fp8'"),
        (dict(backend="torch", dtype="float16"), r"dtype=float16 cannot train .*use precision=fp16"),
    ],
)
def test_a_precision_that_cannot_run_is_a_one_line_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(**overrides)


def test_loss_scaler_follows_grad_scaler_rule():
    """GradScaler's defaults: 2¹⁶, halved on inf/NaN (step skipped), doubled after growth_interval clean steps."""
    s = LossScaler()
    assert (s.scale, s.growth_factor, s.backoff_factor, s.growth_interval) == (2.0**16, 2.0, 0.5, 2000)
    assert s.update(math.inf) is False and s.scale == 2.0**15
    assert s.update(math.nan) is False and s.scale == 2.0**14
    for _ in range(1999):
        assert s.update(1.0)
    assert s.scale == 2.0**14 and s.clean_steps == 1999
    assert s.update(1.0) and s.scale == 2.0**15 and s.clean_steps == 0
    assert LossScaler.from_state(s.state_dict()) == s


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("loss_scale", [0.0, 1024.0])
def test_adamw_on_master_weights_is_float32_adamw(dtype, loss_scale, rng):
    """With the same float32 gradients, the master weights follow float32 AdamW bit for bit (clipping and a
    loss scale folded in), the moments are float32, and the 16-bit parameters are their rounded copies."""
    bk32, bk16 = make_backend("torch", "float32"), make_backend("torch", dtype)
    shapes = {"w": (6, 5), "b": (5,)}
    start = {n: rng.standard_normal(s) for n, s in shapes.items()}
    plain = AdamW(bk32, {n: bk32.from_numpy(a) for n, a in start.items()}, 1e-2, (0.9, 0.99), weight_decay=0.1)
    master = {n: bk32.from_numpy(a) for n, a in start.items()}
    mixed = AdamW(
        bk16, {n: bk16.narrow(m) for n, m in master.items()}, 1e-2, (0.9, 0.99), weight_decay=0.1, master=master
    )
    assert all(m.dtype == bk32.xp.float32 for m in mixed.m.values())
    for _ in range(5):
        grads = {n: rng.standard_normal(s) * 3 for n, s in shapes.items()}
        plain.step({n: bk32.from_numpy(g) for n, g in grads.items()}, max_grad_norm=1.0)
        scaled = {n: bk32.from_numpy(g * (loss_scale or 1.0)) for n, g in grads.items()}
        norm = mixed.step(scaled, max_grad_norm=1.0, loss_scale=loss_scale)
        if loss_scale:
            assert norm == pytest.approx(float(np.sqrt(sum((g**2).sum() for g in grads.values()))), rel=1e-6)
    for n in shapes:
        np.testing.assert_allclose(bk32.to_numpy(mixed.master[n]), bk32.to_numpy(plain.params[n]), rtol=1e-6)
        assert mixed.params[n].dtype == bk16.dtype
        assert bool(bk16.xp.all(mixed.params[n] == bk16.narrow(mixed.master[n])))


def _safetensors_dtypes(path) -> set[str]:
    header = json.loads(path.read_bytes()[8 : 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("precision", HALF)
def test_checkpoints_keep_the_float32_master_weights(precision, tmp_path):
    result = llmscratch.train(
        backend="torch",
        precision=precision,
        max_iters=6,
        eval_interval=6,
        out_dir=str(tmp_path),
        progress=False,
        **SMALL,
    )
    assert result.model.bk.dtype_name == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    ckpt = _checkpoint_dir(tmp_path)
    assert _safetensors_dtypes(ckpt / "model.safetensors") == {"F32"}
    assert _safetensors_dtypes(ckpt / "optimizer.safetensors") == {"F32"}
    saved = json.loads((ckpt / "config.json").read_text())["train"]
    assert (saved["precision"], saved["dtype"]) == (precision, "float32")
    loaded = llmscratch.load(tmp_path, backend="torch")
    assert loaded.model.bk.dtype_name == "float32"
    weights = safetensors.numpy.load_file(str(ckpt / "model.safetensors"))
    for name, p in result.model.params.items():  # the model computed on the rounded masters
        rounded = result.model.bk.narrow(loaded.model.bk.from_numpy(weights[name]))
        assert bool(result.model.bk.xp.all(p == rounded)), name


@pytest.mark.parametrize("precision", HALF)
def test_resume_of_a_mixed_precision_run_is_exact(precision, tmp_path):
    """Stopped at step 40 and resumed, a run repeats the uninterrupted one bit for bit: losses, master weights
    and, for fp16, the loss scale (this run overflows and halves it before step 40)."""
    args = dict(backend="torch", precision=precision, eval_interval=40, progress=False, **SMALL)
    whole = llmscratch.train(max_iters=80, out_dir=str(tmp_path / "whole"), **args)
    llmscratch.train(max_iters=40, out_dir=str(tmp_path / "part"), **args)
    state = json.loads((_checkpoint_dir(tmp_path / "part") / "state.json").read_text())
    if precision == "fp16":
        assert any(h.get("skipped") for h in whole.history if h["step"] < 40), "no overflow to carry over"
        assert state["loss_scaler"]["scale"] < 2.0**16
    resumed = llmscratch.train(max_iters=80, out_dir=str(tmp_path / "part"), resume=True, **args)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    assert resumed.val_loss == whole.val_loss
    a, b = (
        safetensors.numpy.load_file(str(_checkpoint_dir(tmp_path / d) / "model.safetensors")) for d in ("whole", "part")
    )
    assert all(np.array_equal(a[n], b[n]) for n in a)


def _overflowing(trainer: Trainer, at: set[int]) -> dict[str, int]:
    """Make the trainer's backward put an inf into the first gradient at the steps in ``at``; -> the step
    counter the caller keeps current (trainer.step is wrapped to set it)."""
    current = {"it": -1}
    backward, step = trainer.model.backward, trainer.step

    def injected(dloss: float = 1.0):
        grads = backward(dloss)
        if current["it"] in at:
            name = next(iter(grads))
            grads[name] = grads[name] * math.inf
        return grads

    def counted(it: int, stop: bool = False):
        current["it"] = it
        return step(it, stop)

    trainer.model.backward, trainer.step = injected, counted
    return current


def test_injected_overflows_skip_shrink_and_regrow():
    """An inf in one gradient: the step leaves the weights, the moments and AdamW's count alone and halves the
    scale; after growth_interval clean steps the scale doubles back."""
    trainer = Trainer(resolve_config(backend="torch", precision="fp16", **SMALL), progress=False)
    trainer.precision.scaler.growth_interval = 3
    _overflowing(trainer, at={2})
    xp, opt = trainer.bk.xp, trainer.opt
    scales = []
    for it in range(6):
        before = [xp.asarray(a, copy=True) for a in (*opt.master.values(), *opt.m.values(), *opt.v.values())]
        t_before = opt.t
        trainer.step(it)
        after = (*opt.master.values(), *opt.m.values(), *opt.v.values())
        unchanged = all(bool(xp.all(a == b)) for a, b in zip(before, after, strict=True))
        assert unchanged == (it == 2) and opt.t == t_before + (it != 2)
        scales.append(trainer.precision.loss_scale)
    assert scales == [2.0**16, 2.0**16, 2.0**15, 2.0**15, 2.0**15, 2.0**16]  # halved at 2, regrown after 3..5


def test_a_skipped_step_is_logged_and_marked_in_the_history(capsys):
    trainer = Trainer(resolve_config(backend="torch", precision="fp16", max_iters=8, eval_interval=8, **SMALL))
    _overflowing(trainer, at={3})
    result = trainer.run()
    assert [h["step"] for h in result.history if h.get("skipped")] == [3]
    assert all("skipped" in h for h in result.history if h["train_loss"] is not None)
    assert "step 3: the fp16 gradients overflowed; step skipped, loss scale now 32768" in capsys.readouterr().out
