"""GELU forward + backward at the shapes of nanoGPT's CPU model (B=12, T=64, 4C=512), for each op set."""

from __future__ import annotations

import numpy as np
import pytest

from llmscratch.kernels import OP_SETS, get_ops
from llmscratch.util.errors import ConfigError


@pytest.mark.parametrize("op_set", OP_SETS)
def test_gelu_forward_backward(benchmark, bk, op_set):
    try:
        ops = get_ops(op_set, bk)
    except ConfigError as e:
        pytest.skip(str(e))
    rng = np.random.default_rng(0)
    h, dh = (bk.from_numpy(rng.standard_normal((12, 64, 512))) for _ in range(2))

    def step():
        _, cache = ops.gelu_forward(bk, h)
        ops.gelu_backward(bk, dh, cache)

    benchmark.extra_info.update(backend=bk.name, ops=op_set)
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)
