"""Every op, on every backend, against three independent references:

1. central finite differences in float64 (max relative error ≤ 1e-6), computed on the same backend;
2. torch.autograd on the equivalent torch expression in float64 (≤ 1e-10);
3. the numpy backend: float64 ≤ 1e-12, float32 ≤ 1e-5 relative;
and in the 16-bit dtypes against float64 on the same (rounded) inputs, within HALF_TOLERANCE.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import make_backend, rel_err
from op_cases import CASES, OpCase

from llmscratch.kernels import cpu_build

torch = pytest.importorskip("torch")

CASE_IDS = [c.id for c in CASES]


def skip_where_it_cannot_run(bk, case: OpCase) -> None:
    """Cases of the fused C++ kernels run on numpy and torch on the CPU, where they compile."""
    if case.cpu_kernels and (reason := cpu_build.unavailable(bk)):
        pytest.skip(reason)


def run_case(bk, case: OpCase, inputs: dict[str, np.ndarray], dout: np.ndarray | None = None):
    """-> (out, [grad for each name in case.grad_names]) as NumPy arrays; dout defaults to ones."""
    arrays = {name: bk.from_numpy(a) for name, a in inputs.items()}
    out, cache = case.forward(bk, **arrays, **case.kwargs)
    out_np = bk.to_numpy(out)
    if dout is None:
        dout = np.ones(out_np.shape)
    grads = case.backward(bk, bk.from_numpy(dout), cache)
    assert len(grads) == len(case.grad_names)
    return out_np, [bk.to_numpy(g) for g in grads]


def case_inputs(case: OpCase) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The case's inputs and a random upstream gradient dout (fixed seeds: every backend sees the same)."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    inputs = case.make_inputs(rng)
    out_shape = np.shape(run_case(make_backend("numpy"), case, inputs)[0])
    return inputs, rng.standard_normal(out_shape)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_finite_differences(bk64, case: OpCase):
    """Analytic gradients of L = Σ out·dout match central differences (eps 1e-6) for every input element."""
    skip_where_it_cannot_run(bk64, case)
    inputs, dout = case_inputs(case)
    _, grads = run_case(bk64, case, inputs, dout)
    eps = 1e-6
    for name, analytic in zip(case.grad_names, grads, strict=True):
        numeric = np.zeros_like(inputs[name])
        for i in np.ndindex(inputs[name].shape):
            values = []
            for sign in (1.0, -1.0):
                shifted = dict(inputs)
                shifted[name] = inputs[name].copy()
                shifted[name][i] += sign * eps
                out, _ = case.forward(bk64, **{k: bk64.from_numpy(a) for k, a in shifted.items()}, **case.kwargs)
                values.append(float(np.sum(bk64.to_numpy(out) * dout)))
            numeric[i] = (values[0] - values[1]) / (2 * eps)
        err = rel_err(analytic, numeric)
        assert err <= 1e-6, f"{case.id}: d{name} differs from finite differences by {err:.2e}"


@pytest.mark.parametrize("case", [c for c in CASES if c.torch_ref is not None], ids=lambda c: c.id)
def test_matches_torch_autograd(bk64, case: OpCase):
    """Forward output and every input gradient equal torch.autograd's on the torch expression (≤ 1e-10)."""
    skip_where_it_cannot_run(bk64, case)
    inputs, dout = case_inputs(case)
    out, grads = run_case(bk64, case, inputs, dout)
    tensors = {
        k: torch.tensor(a, requires_grad=k in case.grad_names, dtype=torch.float64 if a.dtype.kind == "f" else None)
        for k, a in inputs.items()
    }
    ref = case.torch_ref(torch, **tensors)
    ref.backward(torch.tensor(dout))
    assert rel_err(out, ref.detach().numpy()) <= 1e-10, f"{case.id}: forward"
    for name, g in zip(case.grad_names, grads, strict=True):
        assert rel_err(g, tensors[name].grad.numpy()) <= 1e-10, f"{case.id}: d{name}"


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("case", [c for c in CASES if c.cross_backend], ids=lambda c: c.id)
def test_same_result_on_every_backend(backend_id, case: OpCase, dtype: str, tol: float):
    """The same inputs give the same output and gradients as the numpy backend."""
    bk = make_backend(backend_id, dtype)
    skip_where_it_cannot_run(bk, case)
    inputs, dout = case_inputs(case)
    out, grads = run_case(bk, case, inputs, dout)
    ref_out, ref_grads = run_case(make_backend("numpy", dtype), case, inputs, dout)
    assert rel_err(out, ref_out) <= tol
    for name, g, r in zip(case.grad_names, grads, ref_grads, strict=True):
        assert rel_err(g, r) <= tol, f"{case.id}: d{name} on {backend_id} ({dtype})"


# 4 units of the format's machine epsilon (bfloat16 has 7 fraction bits, float16 10), relative to the largest
# float64 value: what an op that accumulates in float32 and rounds its results once or a few times keeps.
HALF_TOLERANCE = {"bfloat16": 4 * 2.0**-7, "float16": 4 * 2.0**-10}


@pytest.mark.parametrize("dtype", HALF_TOLERANCE)
@pytest.mark.parametrize("case", [c for c in CASES if c.cross_backend and not c.cpu_kernels], ids=lambda c: c.id)
@pytest.mark.parametrize("backend_id", ["torch", "torch-cuda", "cupy"])
def test_half_precision_against_float64(backend_id, case: OpCase, dtype: str):
    """bfloat16 / float16 outputs and gradients equal the float64 ones of the same rounded inputs within
    HALF_TOLERANCE (the losses of softmax, norms and cross-entropy are summed in float32)."""
    bk = make_backend(backend_id, dtype)
    inputs, dout = case_inputs(case)
    rounded = {
        k: bk.to_numpy(bk.from_numpy(a)).astype(a.dtype) if a.dtype.kind == "f" else a for k, a in inputs.items()
    }
    dout = bk.to_numpy(bk.from_numpy(dout)).astype(np.float64)
    out, grads = run_case(bk, case, rounded, dout)
    ref_out, ref_grads = run_case(make_backend("numpy", "float64"), case, rounded, dout)
    tol = HALF_TOLERANCE[dtype]
    assert rel_err(out, ref_out) <= tol, f"{case.id}: forward on {backend_id} ({dtype})"
    for name, g, r in zip(case.grad_names, grads, ref_grads, strict=True):
        assert rel_err(g, r) <= tol, f"{case.id}: d{name} on {backend_id} ({dtype})"
