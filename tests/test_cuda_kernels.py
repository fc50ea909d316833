"""The CUDA attention kernels (llmscratch/kernels/cuda/attention.cu), three ways:

1. nvcc compiles every instantiation for sm_90 (H100), where nvcc exists;
2. the same source runs on the CPU under tests/cuda_emulator (threads + barriers), driven by the same Python
   wrapper as on a GPU, and matches the reference op: this is what checks the kernels' logic on machines with
   no GPU, CI included;
3. on a real GPU, through CuPy, against the reference op on the cupy backend (skipped without one).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import make_backend, rel_err
from test_kernels import SHAPES, make_inputs

from llmscratch import ops
from llmscratch.kernels import KERNELS
from llmscratch.kernels import cuda_attention as ca

EMULATOR = Path(__file__).parent / "cuda_emulator"


def test_every_instantiation_compiles_for_hopper(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    lines = [f'#include "{ca.SOURCE}"']
    for t in ca.C_TYPES.values():
        p, u8 = f"const {t}*", "const unsigned char*"
        lines += [
            f"template __global__ void softmax_forward<{t}>({p}, {t}*, {u8}, int, int, int, {t}, int);",
            f"template __global__ void softmax_backward<{t}>({p}, {p}, {t}*, int, {t});",
        ]
        for D in ca.HEAD_DIMS:
            qkv = f"{p}, {p}, {p}, {u8}"
            tail = f"int, int, int, int, {t}, int"
            lines += [
                f"template __global__ void flash_forward<{t}, {D}>({qkv}, {t}*, {t}*, {tail});",
                f"template __global__ void flash_backward_dkdv<{t}, {D}>({qkv}, {p}, {p}, {p}, {t}*, {t}*, {tail});",
                f"template __global__ void flash_backward_dq<{t}, {D}>({qkv}, {p}, {p}, {p}, {t}*, {tail});",
            ]
    (tmp_path / "all.cu").write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [nvcc, "-arch=sm_90", "-std=c++17", "-Werror", "all-warnings", "-c", "all.cu", "-o", "all.o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]


class EmulatorLauncher:
    """Runs the kernels of attention.cu on the CPU (tests/cuda_emulator/harness.cpp, loaded with ctypes)."""

    def __init__(self, lib: ctypes.CDLL, softmax_threads: int = 8) -> None:
        self.lib, self.softmax_threads = lib, softmax_threads  # fewer threads per row: the loops are strided
        self.launched: list[str] = []

    def contiguous(self, x):
        return np.ascontiguousarray(x)

    def __call__(self, kernel, ctype, D, grid, block, shared, args):
        assert shared <= 1 << 20, "more shared memory than the emulator (and an H100) has"
        suffix = {"float": "f32", "double": "f64"}[ctype]
        fn = getattr(self.lib, f"{kernel}_{suffix}" + (f"_d{D}" if D else ""))
        converted = []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous
                converted.append(ctypes.c_void_p(a.ctypes.data))
            else:
                converted.append(
                    {np.int32: ctypes.c_int, np.float32: ctypes.c_float, np.float64: ctypes.c_double}[type(a)](a)
                )
        self.launched.append(kernel)
        if D is None:
            fn(ctypes.c_uint(grid[0]), ctypes.c_uint(self.softmax_threads), *converted)
        else:
            fn(ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]), ctypes.c_uint(block), *converted)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory) -> ctypes.CDLL:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not installed")
    lib = tmp_path_factory.mktemp("emu") / "emulator.so"
    run = subprocess.run(
        [gxx, "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", str(EMULATOR / "harness.cpp"), "-o", str(lib)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0 and "barrier" in run.stderr:
        pytest.skip("this g++ lacks C++20 <barrier>")
    assert run.returncode == 0, run.stderr[-3000:]
    return ctypes.CDLL(str(lib))


FAMILIES = {
    "cuda-flash": (ca.flash_forward, ca.flash_backward),
    "cuda-softmax": (ca.softmax_attention_forward, ca.softmax_attention_backward),
}


def run(bk, forward, backward, q, k, v, mask, dout, causal, **kw):
    out, cache = forward(
        bk,
        *(bk.from_numpy(a) for a in (q, k, v)),
        causal=causal,
        key_mask=None if mask is None else bk.from_numpy(mask),
        **kw,
    )
    grads = backward(bk, bk.from_numpy(dout), cache)
    return [bk.to_numpy(a) for a in (out, *grads)]


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("family", FAMILIES)
def test_emulated_kernels_match_naive(emulator, family, shape, dtype, tol):
    bk = make_backend("numpy", dtype)
    _, B, H, Hkv, T, S, causal, padding = shape
    q, k, v, mask, dout = make_inputs(B, H, Hkv, T, S, padding)
    launcher = EmulatorLauncher(emulator)
    forward, backward = FAMILIES[family]
    got = run(bk, forward, backward, q, k, v, mask, dout, causal, launcher=launcher)
    ref = run(bk, ops.attention_forward, ops.attention_backward, q, k, v, mask, dout, causal)
    assert launcher.launched  # the kernels really ran
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        assert np.all(np.isfinite(a)), name
        assert rel_err(a, b, floor=1.0) <= tol, f"{family} {name}"


def test_emulated_flash_zeroes_rows_that_see_nothing(emulator):
    bk = make_backend("numpy", "float64")
    q, k, v, mask, dout = make_inputs(2, 2, 2, 7, 7, "rows")
    out, dq, dk, dv = run(
        bk, ca.flash_forward, ca.flash_backward, q, k, v, mask, dout, False, launcher=EmulatorLauncher(emulator)
    )
    for a in (out, dq, dk, dv):
        assert np.all(a[1] == 0) and np.all(np.isfinite(a))


def test_unsupported_head_dim_and_dtype_are_refused(emulator):
    from llmscratch.util.errors import ConfigError

    bk = make_backend("numpy", "float32")
    x = bk.from_numpy(np.zeros((1, 1, 4, 24)))
    with pytest.raises(ConfigError, match=r"compiled for head dims \(16, 32, 64, 128\), not 24; use attention='flash'"):
        ca.flash_forward(bk, x, x, x, launcher=EmulatorLauncher(emulator))
    half = make_backend("torch", "float16")
    assert ca.unavailable(half) == "the CUDA kernels compute in float32 or float64, not float16"
    y = half.from_numpy(np.zeros((1, 1, 4, 16)))
    with pytest.raises(
        ConfigError, match="cuda_flash_attention: the CUDA kernels compute in float32 or float64, not float16"
    ):
        ca.flash_forward(half, y, y, y, launcher=EmulatorLauncher(emulator))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("kernel", ["cuda", "cuda-softmax"])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_cuda_kernels_on_a_gpu(kernel, shape, dtype, tol):
    bk = make_backend("cupy", dtype)  # skips cleanly without a usable GPU
    _, B, H, Hkv, T, S, causal, padding = shape
    q, k, v, mask, dout = make_inputs(B, H, Hkv, T, S, padding)
    got = run(bk, KERNELS[kernel].forward, KERNELS[kernel].backward, q, k, v, mask, dout, causal)
    ref = run(bk, ops.attention_forward, ops.attention_backward, q, k, v, mask, dout, causal)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
        assert rel_err(a, b, floor=1.0) <= tol, f"{kernel} {name}"
