"""Attention kernels, forward + backward, B=1 H=4 D=64 float32, causal."""

from __future__ import annotations

import numpy as np
import pytest

from llmscratch.kernels import KERNELS


@pytest.mark.parametrize("T", [256, 1024])
@pytest.mark.parametrize("kernel", ["naive", "flash", "sdpa"])
def test_attention_forward_backward(benchmark, bk, kernel, T):
    if not KERNELS[kernel].runs_on(bk.name):  # the bk fixture is parametrised over backends
        pytest.skip(f"{kernel} runs on {'/'.join(KERNELS[kernel].backends or ())} only")
    rng = np.random.default_rng(0)
    q, k, v, dout = (bk.from_numpy(rng.standard_normal((1, 4, T, 64))) for _ in range(4))

    def step():
        _, cache = KERNELS[kernel].forward(bk, q, k, v, causal=True)
        KERNELS[kernel].backward(bk, dout, cache)
        bk.synchronize()

    benchmark.extra_info.update(backend=bk.name, kernel=kernel, T=T)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
