"""bf16 and fp16 training reach fp32's validation loss: nanoGPT's CPU run (the shakespeare_char_cpu preset,
torch on the CPU, its schedule shortened to 1000 iterations) in each precision, compared within 0.05 (llm.c's
tolerance for reduced precision). About half a minute per run on a 2-core machine; the three runs share one
module-scoped fp32 baseline. The whole 2000-iteration runs, bf16 beside fp32, are in benchmarks/results
(train_*.md).
"""

from __future__ import annotations

import pytest
from conftest import corpus

import llmscratch

pytest.importorskip("torch")
TOLERANCE = 0.05
ITERS = 1000


def _val_loss(precision: str) -> float:
    corpus("shakespeare")  # skips when the corpus cannot be had
    result = llmscratch.train(
        backend="torch",
        preset="shakespeare_char_cpu",
        precision=precision,
        max_iters=ITERS,
        lr_decay_iters=ITERS,
        eval_interval=ITERS // 2,
        progress=False,
    )
    assert result.history[-1]["step"] == ITERS
    return result.val_loss


@pytest.fixture(scope="module")
def fp32_val_loss() -> float:
    return _val_loss("fp32")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reaches_the_fp32_val_loss(precision, fp32_val_loss):
    loss = _val_loss(precision)
    assert fp32_val_loss < 2.2, f"the fp32 baseline did not train: {fp32_val_loss:.4f}"
    assert abs(loss - fp32_val_loss) <= TOLERANCE, f"{precision} {loss:.4f} vs fp32 {fp32_val_loss:.4f}"
