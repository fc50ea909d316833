"""The memory a run needs, estimated before it starts (llmscratch.training.memory), against what a training
step really takes (tracemalloc's peak over NumPy's buffers: a count of bytes, not a timing), and the
refusal of a run that cannot fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import flags, tiny

from llmscratch.backends import get_backend
from llmscratch.cli import main
from llmscratch.models import ModelConfig, model_class
from llmscratch.training import memory
from llmscratch.training.memory import estimate_training_memory

SMALL = dict(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64)


def measured_step(cfg: ModelConfig, B: int, attention: str) -> tuple[int, int]:
    """(peak bytes of one forward and backward beyond what existed before, the gradients' bytes)."""
    bk = get_backend("numpy", dtype="float32")
    rng = np.random.default_rng(0)
    model = model_class(cfg.kind)(cfg, bk, attention=attention)
    model.training = True
    T, V = cfg.block_size, cfg.vocab_size
    if cfg.kind == "gpt":
        args = (rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)))
    elif cfg.kind == "encoder":
        args = (rng.integers(0, V, (B, T)), rng.integers(0, cfg.n_classes, (B,)))
    else:
        args = (rng.integers(0, cfg.src_vocab_size, (B, T)), rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)))
    model.forward(*args)
    model.backward()  # the first step's one-off allocations (kernel buffers) are not the step's
    with bk.peak_memory() as peak:
        model.forward(*args)
        model.backward()
    gradients = 4 * sum(math.prod(shape) for shape, _ in model_class(cfg.kind).specs_for(cfg).values())
    return peak.bytes, gradients


@pytest.mark.parametrize("attention", ["naive", "auto"])
@pytest.mark.parametrize(
    "shape",
    [
        SMALL,
        SMALL | {"block_size": 256},
        SMALL | {"vocab_size": 1000},
        SMALL | {"n_layer": 4, "n_embd": 128, "mlp": "swiglu"},
        SMALL | {"n_head": 8, "block_size": 128, "pos": "rope", "norm": "rmsnorm"},
        SMALL | {"kind": "encoder", "n_classes": 3},
        SMALL | {"kind": "seq2seq", "src_vocab_size": 50, "pos": "sinusoidal"},
    ],
    ids=["gpt", "long", "wide-vocab", "swiglu", "rope", "encoder", "seq2seq"],
)
def test_the_estimate_bounds_a_real_step(shape, attention):
    """A step takes at least half the estimated activations, and no more than them plus its gradients."""
    cfg = ModelConfig(**({"kind": "gpt"} | shape))
    peak, gradients = measured_step(cfg, 4, attention)
    estimate = estimate_training_memory(cfg, 4, 1, get_backend("numpy", dtype="float32"), master=False)
    assert 0.5 * estimate.activations <= peak <= estimate.activations + gradients, (peak, estimate)


def test_parameters_count_weights_gradients_moments_and_masters():
    cfg = ModelConfig(kind="gpt", **SMALL)
    count = sum(math.prod(shape) for shape, _ in model_class("gpt").specs_for(cfg).values())
    bk = get_backend("numpy", dtype="float32")
    assert estimate_training_memory(cfg, 1, 1, bk, master=False).parameters == 16 * count
    assert estimate_training_memory(cfg, 1, 4, bk, master=True).parameters == 20 * count + 4 * count


def test_a_run_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", "--block-size", "100000", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this run needs about ") and "batch_size 12 × block_size 100000" in err
    assert "--no-check-memory" in err and err.count("\n") == 1 and not out.exists()
    monkeypatch.setattr(memory.Backend, "free_memory", lambda self: 1000)  # a machine with 1 kB free
    argv = ["train", *flags(**tiny()), "--max-iters", "1", "--eval-interval", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 2 and "has 1.0 kB free" in capsys.readouterr().err
    assert main([*argv, "--no-check-memory"]) == 0  # the closing sample's KV cache is not checked either
    assert "---- sample ----" in capsys.readouterr().out


@pytest.mark.parametrize(
    "shape",
    [
        {"kind": "gpt", "n_layer": 3, "tie_embeddings": False},
        {"kind": "encoder", "n_layer": 3, "n_classes": 3, "pooler": True},
        {"kind": "seq2seq", "n_layer": 3, "n_decoder_layer": 5, "src_vocab_size": 40},
    ],
)
def test_the_parameter_count_is_the_specs_without_enumerating_every_block(shape):
    cfg = ModelConfig(vocab_size=65, **shape)
    assert memory.parameter_count(cfg) == sum(math.prod(s) for s, _ in model_class(cfg.kind).specs_for(cfg).values())
    huge = ModelConfig(vocab_size=65, **(shape | {"n_layer": 10**40}))
    assert memory.parameter_count(huge) > 10**40  # counted, not built
