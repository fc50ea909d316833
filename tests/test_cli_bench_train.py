"""The training benchmark's accounting: its linear-layer matmul floor is a real step's matmuls, and its
records split each step into those matmuls and the rest."""

from __future__ import annotations

import numpy as np
import pytest

from llmscratch.backends import get_backend
from llmscratch.cli.bench.timing import linear_layer_matmuls
from llmscratch.cli.bench.train import bench_train
from llmscratch.models import GPT, GPTConfig


@pytest.mark.parametrize("tie_embeddings", [True, False])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_linear_layer_matmuls_are_the_matmuls_of_a_real_step(monkeypatch, mlp, tie_embeddings):
    """Every 2-D matmul a training step runs, with its operand layouts, in the order the step runs them."""
    torch = pytest.importorskip("torch")
    bk = get_backend("torch", dtype="float32")
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, mlp=mlp, tie_embeddings=tie_embeddings)
    model = GPT(cfg, bk)
    idx = bk.from_numpy(np.random.default_rng(0).integers(0, 11, (3, 8)))
    seen: list[tuple] = []
    matmul = torch.Tensor.__matmul__

    def recording(a, b):
        if a.ndim == 2 and b.ndim == 2:
            seen.append((tuple(a.shape), a.is_contiguous(), tuple(b.shape), b.is_contiguous()))
        return matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", recording)
    model.forward(idx, idx)
    model.backward()
    step, seen[:] = list(seen), []
    linear_layer_matmuls(bk, cfg, model.op_set.name, rows=3 * 8)()
    assert len(step) == 3 * (4 * cfg.n_layer + 1)
    assert seen == step


def test_bench_train_splits_each_step_into_the_linear_matmuls_and_the_rest():
    """The record holds both timings and their difference (which matmuls are timed is checked above; how their
    time compares with a step's is a measurement, for the benchmark to report, not for a test to assert)."""
    records = bench_train(
        ["numpy"], "shakespeare_char_cpu", rounds=1, steps=2, n_layer=1, n_embd=32, n_head=2, block_size=16
    )
    (rec,) = records
    assert rec["linear_matmul_ms"] > 0 and rec["step_ms"] > 0
    assert rec["rest_ms"] == pytest.approx(rec["step_ms"] - rec["linear_matmul_ms"])
    from llmscratch.kernels import cpu_build

    if cpu_build.unavailable(get_backend("numpy")) is None:  # the GEMM choices its process made are reported
        assert rec["gemm_choices"] and all(c["choice"] in ("own", "vendor") for c in rec["gemm_choices"])


def test_noisy_start_neighbours_run_while_the_block_does_and_stop_after():
    import multiprocessing

    from llmscratch.cli.bench.train import neighbours

    ctx = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    with neighbours(ctx, 2):
        running = set(multiprocessing.active_children()) - before
        assert len(running) == 2 and all(p.is_alive() for p in running)
    assert not any(p.is_alive() for p in running) and not set(multiprocessing.active_children()) - before


def test_full_runs_train_every_contestant_to_the_end():
    """``bench train --full``: each contestant (a precision too, and the reference) trains to max_iters in its
    own process, from the same weights and batches, to nearly the same loss."""
    from llmscratch.cli.bench.train import full_runs

    tiny = dict(n_layer=1, n_embd=32, n_head=2, block_size=16, max_iters=20, eval_interval=10, eval_iters=2)
    records = full_runs(["numpy", "torch@bf16", "reference"], "shakespeare_char_cpu", data="stdlib", **tiny)
    assert [r["status"] for r in records] == ["ok"] * 3, records
    losses = {r["contestant"]: r["final_val_loss"] for r in records}
    assert all(r["final_step"] == 20 for r in records)
    assert losses["numpy"] == pytest.approx(losses["reference"], rel=1e-4)
    assert losses["torch@bf16"] == pytest.approx(losses["reference"], abs=0.05)
