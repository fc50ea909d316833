"""The JAX backend's own behaviour, and a training step compiled into one program (compile=True).

The ops, layers, models and generation run on JAX through the shared suites (conftest.BACKEND_IDS comes
from the registry); here: arrays that cannot be written in place, the random streams, the device errors,
and the compiled step against the eager one and against NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend, tiny

import llmscratch
from llmscratch.backends import get_backend
from llmscratch.cli import main
from llmscratch.cli.bench.common import parse_spec
from llmscratch.util.errors import BackendError, ConfigError

jax = pytest.importorskip("jax")

TINY = tiny(n_layer=2, eval_iters=2, warmup_iters=2, lr_decay_iters=8, learning_rate=3e-3, progress=False)


def weights(result) -> dict[str, np.ndarray]:
    return {n: result.model.bk.to_numpy(p) for n, p in result.model.params.items()}


def losses(result) -> list[float]:
    return [h["train_loss"] for h in result.history if h["train_loss"] is not None]


def test_assign_writes_into_a_copy_on_jax_and_in_place_elsewhere(bk64):
    x = bk64.zeros((2, 3))
    y = bk64.assign(x, (slice(None), slice(1, 3)), bk64.asarray([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(bk64.to_numpy(y), [[0, 1, 2], [0, 3, 4]])
    written = bool(np.any(bk64.to_numpy(x)))
    assert written == (bk64.name != "jax")  # JAX's arrays cannot change: x is as it was


def test_one_generator_gives_fresh_numbers_at_every_draw_and_the_same_for_the_same_seed():
    bk = make_backend("jax", "float32")
    gen = bk.generator(1, 2)
    a, b = bk.to_numpy(bk.uniform(gen, (64,))), bk.to_numpy(bk.uniform(gen, (64,)))
    again = bk.to_numpy(bk.uniform(bk.generator(1, 2), (64,)))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, again)
    assert a.min() >= 0.0 and a.max() < 1.0


@pytest.mark.parametrize(
    "device, message",
    [("tpu", "unknown jax device 'tpu'"), ("cpu:7", "device 'cpu:7' does not exist"), ("gpu", "jax[cuda12]")],
)
def test_a_device_jax_cannot_use_is_one_line(device, message):
    if device == "gpu" and jax.devices()[0].platform == "gpu":
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendError, match=message.replace("[", r"\[")) as e:
        get_backend("jax", device)
    assert "\n" not in str(e.value)


def test_the_compiled_step_computes_what_the_eager_step_does():
    """float64, dropout, two micro-batches, clipping and weight decay: the one compiled program and the
    op-by-op step give the same losses and weights to rounding."""
    opts = dict(TINY, backend="jax", dtype="float64", dropout=0.1, gradient_accumulation_steps=2, max_iters=6)
    eager = llmscratch.train(**opts)
    compiled = llmscratch.train(compile=True, **opts)
    np.testing.assert_allclose(losses(compiled), losses(eager), rtol=1e-10)
    for name, w in weights(eager).items():
        np.testing.assert_allclose(weights(compiled)[name], w, rtol=1e-9, atol=1e-12, err_msg=name)


def test_compiled_jax_trains_as_numpy_does():
    """A second library as the reference: the same run on NumPy (float64, no dropout, whose random streams
    differ between libraries)."""
    opts = dict(TINY, dtype="float64", gradient_accumulation_steps=2, max_iters=6, ops="array-api")
    reference = llmscratch.train(backend="numpy", **opts)
    compiled = llmscratch.train(backend="jax", compile=True, **opts)
    np.testing.assert_allclose(losses(compiled), losses(reference), rtol=1e-10)
    for name, w in weights(reference).items():
        np.testing.assert_allclose(weights(compiled)[name], w, rtol=1e-8, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("task", ["classify", "seq2seq"])
def test_compiled_steps_train_the_other_model_kinds(tmp_path, task):
    from test_tasks import write_classification, write_pairs

    data = write_classification(tmp_path / "d.csv") if task == "classify" else write_pairs(tmp_path / "d.tsv")
    opts = dict(TINY, task=task, data=str(data), backend="jax", dtype="float64", max_iters=4, eval_interval=4)
    eager, compiled = llmscratch.train(**opts), llmscratch.train(compile=True, **opts)
    np.testing.assert_allclose(losses(compiled), losses(eager), rtol=1e-9)


def test_bf16_mixed_precision_compiles_with_float32_masters():
    opts = dict(TINY, backend="jax", precision="bf16", max_iters=6)
    eager, compiled = llmscratch.train(**opts), llmscratch.train(compile=True, **opts)
    assert all(p.dtype == jax.numpy.bfloat16 for p in compiled.model.params.values())
    np.testing.assert_allclose(losses(compiled), losses(eager), rtol=2e-2)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--backend", "numpy", "--compile"], "the numpy backend does not compile whole steps"),
        (["--backend", "jax", "--compile", "--precision", "fp16"], "cannot take fp16's loss scaling"),
    ],
)
def test_what_cannot_compile_is_refused_in_one_line(tmp_path, capsys, flags, message):
    assert main(["train", *flags, "--max-iters", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("ckpt-*"))


def test_bench_specs_name_a_precision_and_compiling():
    spec = parse_spec("jax:gpu@bf16+compiled")
    assert (spec.name, spec.device, spec.precision, spec.compiled) == ("jax", "gpu", "bf16", True)
    assert parse_spec("torch@fp16").compiled is False
    for bad in ("jax@fast", "jax@bf16+fp16"):
        with pytest.raises(ConfigError, match="after @ come one precision"):
            parse_spec(bad)
