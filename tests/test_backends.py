"""The Backend layer: availability that tells the truth, clear errors, and the extras the standard lacks."""

from __future__ import annotations

import math
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import make_backend

import llmscratch
from llmscratch.backends import get_backend
from llmscratch.backends.erf import erf_array_api
from llmscratch.util.errors import BackendError


def test_available_backends_lists_what_runs_here():
    names = llmscratch.available_backends()
    assert "numpy" in names
    for name in names:
        assert get_backend(name).name == name


def test_available_backends_from_the_command_line():
    """The one-liner of docs/backends-and-kernels.md prints a list holding numpy."""
    out = subprocess.run(
        [sys.executable, "-c", "import llmscratch; print(llmscratch.available_backends())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'numpy'" in out


def test_unknown_backend_names_the_available_ones():
    with pytest.raises(BackendError, match=r"unknown backend 'nump'.*did you mean 'numpy'.*available here: numpy"):
        get_backend("nump")


def test_cupy_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(BackendError, match="cupy is not installed; pip install 'llmscratch\\[cupy\\]'"):
        get_backend("cupy")
    assert "cupy" not in llmscratch.available_backends()


def test_cupy_installed_without_gpu(monkeypatch):
    """CuPy imports fine on a machine with no GPU: the error must say so, not show a CUDA stack trace."""
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(BackendError, match=r"no usable CUDA GPU was found \(cupy.cuda.is_available\(\) is False\)"):
        get_backend("cupy")


def test_cupy_with_broken_driver(monkeypatch):
    def broken():
        raise RuntimeError("cudaErrorInsufficientDriver")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=broken)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(BackendError, match="no usable CUDA GPU"):
        get_backend("cupy")


@pytest.mark.parametrize(
    "name, dtype, have",
    [
        ("numpy", "bfloat16", "torch, jax"),
        ("strict", "bfloat16", "torch, jax"),
        ("cupy", "bfloat16", "torch, jax"),
        ("numpy", "float16", "torch, cupy, jax"),
        ("strict", "float16", "torch, cupy, jax"),
    ],
)
def test_half_dtypes_refused_where_missing_and_name_where_they_are(name, dtype, have, monkeypatch):
    if name == "cupy":  # the dtype check comes before any GPU is needed
        monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendError, match=f"the {name} backend has no {dtype}.*a backend that has it: {have}$"):
        get_backend(name, dtype=dtype)


def test_unsupported_dtype_lists_the_choices():
    with pytest.raises(
        BackendError, match="unsupported dtype 'int8'; choose one of float32, float64, bfloat16, float16"
    ):
        get_backend("numpy", dtype="int8")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_half_dtypes_accumulate_in_float32(dtype):
    pytest.importorskip("torch")
    bk = get_backend("torch", dtype=dtype)
    assert bk.dtype == getattr(bk.xp, dtype) and bk.wide_dtype == bk.xp.float32
    assert get_backend("torch", dtype="float64").wide_dtype == bk.xp.float64


def test_numpy_and_strict_refuse_a_gpu_device():
    with pytest.raises(BackendError, match="numpy backend runs on the CPU only"):
        get_backend("numpy", device="cuda")
    with pytest.raises(BackendError, match="strict backend runs on the CPU only"):
        get_backend("strict", device="cuda")


def test_torch_cuda_without_gpu_says_so():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendError, match=r"torch cannot use device 'cuda': it needs an NVIDIA GPU .*device='cpu'"):
        get_backend("torch", device="cuda")


class FakeAccelerator:
    """torch.cuda / torch.mps / torch.xpu as a machine with ``count`` such devices would have them."""

    def __init__(self, count: int) -> None:
        self.count = count

    def is_available(self) -> bool:
        return self.count > 0

    def device_count(self) -> int:
        return self.count


@pytest.mark.parametrize(
    "device, dtype, message",
    [
        ("mps", "float32", None),
        ("mps", "bfloat16", None),
        ("mps", "float64", r"torch has no float64 on mps devices; use dtype float32 or bfloat16 or float16"),
        ("cuda:1", "float64", None),
        ("cuda:2", "float32", r"device 'cuda:2' does not exist; this machine has 2 cuda device\(s\)"),
        ("xpu", "float32", r"torch cannot use device 'xpu': it needs an Intel GPU and an XPU build of torch"),
        ("meta", "float32", r"llmscratch does not run on torch 'meta' devices; use cpu, cuda, mps, xpu"),
        ("gpu", "float32", r"unknown torch device 'gpu'; use cpu, cuda, mps, xpu"),
        (None, "float64", None),
    ],
)
def test_torch_device_selection(device, dtype, message):
    """The choice of device, on a machine made up of two CUDA GPUs, Apple silicon and no Intel GPU (the logic
    runs on any machine; the devices themselves are tested where they are)."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from llmscratch.backends.torch_backend import torch_device

    machine = SimpleNamespace(
        device=torch.device,
        __version__=torch.__version__,
        cuda=FakeAccelerator(2),
        mps=FakeAccelerator(1),
        xpu=FakeAccelerator(0),
    )
    if message is None:
        assert torch_device(machine, device, dtype) == torch.device(device or "cpu")
    else:
        with pytest.raises(BackendError, match=message):
            torch_device(machine, device, dtype)


@pytest.mark.parametrize("device", ["mps", "xpu", "cuda"])
def test_torch_accelerators_present_here_compute_like_the_cpu(device):
    """Each torch accelerator this machine has: a forward pass equal to the CPU's (skipped where absent)."""
    torch = pytest.importorskip("torch")
    module = getattr(torch, device, None)
    if module is None or not module.is_available():
        pytest.skip(f"no torch {device} device here")
    from llmscratch import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_embd=32)
    idx = np.arange(16)[None, :] % 50
    on_cpu = GPT(cfg, get_backend("torch", dtype="float32"))
    there = GPT(cfg, get_backend("torch", device=device, dtype="float32"))
    cpu_logits, _ = on_cpu.forward(idx)
    logits, _ = there.forward(idx)
    np.testing.assert_allclose(there.bk.to_numpy(logits), on_cpu.bk.to_numpy(cpu_logits), rtol=1e-4, atol=1e-4)


def test_torch_bfloat16_upcasts_to_numpy():
    pytest.importorskip("torch")
    bk = get_backend("torch", dtype="bfloat16")
    x = bk.asarray([1.0, 2.5, -3.0])
    out = bk.to_numpy(x * 2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [2.0, 5.0, -6.0])


def test_round_trip_and_dtypes(bk64):
    a = np.arange(12.0).reshape(3, 4) / 7
    x = bk64.from_numpy(a)
    assert x.dtype == bk64.xp.float64
    np.testing.assert_array_equal(bk64.to_numpy(x), a)
    ids = bk64.from_numpy(np.array([3, 1, 2]))
    assert ids.dtype == bk64.xp.int64
    assert bk64.from_numpy(np.array([True, False])).dtype == bk64.xp.bool
    assert bk64.item(bk64.xp.sum(x)) == pytest.approx(a.sum())


def test_from_numpy_copies(bk64):
    a = np.zeros(3)
    x = bk64.from_numpy(a)
    a[0] = 5.0
    assert bk64.to_numpy(x)[0] == 0.0


def test_scatter_add_rows_accumulates_repeats(bk64):
    rng = np.random.default_rng(0)
    idx = np.array([3, 1, 3, 3, 0, 1])
    src = rng.standard_normal((6, 4))
    out = rng.standard_normal((5, 4))
    expected = out.copy()
    np.add.at(expected, idx, src)
    got = bk64.scatter_add_rows(bk64.from_numpy(out), bk64.from_numpy(idx), bk64.from_numpy(src))
    np.testing.assert_allclose(bk64.to_numpy(got), expected, rtol=1e-13, atol=1e-13)


def test_scatter_add_rows_pure_standard_over_several_chunks():
    """The one-hot fallback works chunk by chunk; a vocabulary bigger than one chunk must still be exact."""
    bk = make_backend("strict")
    V = 9000
    idx = np.array([0, 8999, 4095, 4096, 4096, 12])
    src = np.arange(12.0).reshape(6, 2)
    expected = np.zeros((V, 2))
    np.add.at(expected, idx, src)
    got = bk.scatter_add_rows(bk.zeros((V, 2)), bk.from_numpy(idx), bk.from_numpy(src))
    np.testing.assert_array_equal(bk.to_numpy(got), expected)


def test_erf_matches_math_erf(bk64):
    x = np.concatenate([np.linspace(-7, 7, 2001), [0.0, 1.999999, 2.0, 2.000001, -1e-300, 30.0]])
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(bk64.to_numpy(bk64.erf(bk64.from_numpy(x))), expected, rtol=0, atol=5e-15)
    pure = bk64.to_numpy(erf_array_api(bk64.xp, bk64.from_numpy(x)))
    np.testing.assert_allclose(pure, expected, rtol=0, atol=5e-15)


def test_native_generator_is_reproducible_by_seed(bk32):
    a = bk32.to_numpy(bk32.uniform(bk32.generator(3, 10), (1000,)))
    b = bk32.to_numpy(bk32.uniform(bk32.generator(3, 10), (1000,)))
    c = bk32.to_numpy(bk32.uniform(bk32.generator(3, 11), (1000,)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() < 1.0
    assert abs(a.mean() - 0.5) < 0.05


def test_torch_builds_no_autograd_graph():
    torch = pytest.importorskip("torch")
    from llmscratch import ops

    bk = get_backend("torch")
    x = bk.from_numpy(np.ones((2, 3, 4)))
    out, cache = ops.layernorm_forward(bk, x, bk.from_numpy(np.ones(4)), bk.from_numpy(np.zeros(4)))
    dx, dw, db = ops.layernorm_backward(bk, out, cache)
    assert all(t.grad_fn is None and not t.requires_grad for t in (out, dx, dw, db))
    assert isinstance(out, torch.Tensor)


def test_synchronize_and_peak_memory(bk32):
    bk32.synchronize()
    with bk32.peak_memory() as mem:
        x = bk32.zeros((1024, 1024))  # 4 MiB
        y = x + 1.0
        del x, y
    assert mem.bytes is None or 4 * 2**20 <= mem.bytes < 64 * 2**20
