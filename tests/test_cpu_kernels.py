"""The fused C++ CPU kernels (llmscratch/kernels/cpu/fused.cpp) against the Array API ops they stand in for.

Every kernel, on numpy and torch, float64 (≤ 1e-12: the same math, summed in another order) and float32
(≤ 1e-5), on odd shapes, non-contiguous inputs and extreme values; the float32 exp approximation against
float64 truth; AdamW over many steps; and what happens without a compiler or off the CPU. Each runs on every
build path this CPU allows (``KERNEL_PATHS``): the native vector width (AVX-512 where the CPU has it) on OpenMP
threads, the serial build (the fallback where -fopenmp does not compile), and the AVX2 build forced on an
AVX-512 CPU.
The kernels also run through tests/test_ops.py's finite-difference and PyTorch-autograd checks (the
``*_cpu_fused`` and ``*_cpu_tiled`` cases of tests/op_cases.py), the attention kernel ("cpu-tiled") through
tests/test_kernels.py with every other attention kernel, and the whole model with them through
tests/test_gpt_parity.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import make_backend, rel_err

from llmscratch import ops
from llmscratch.kernels import OP_SETS, cpu_build, default_attention_kernel, default_ops, get_attention_kernel, get_ops
from llmscratch.kernels import cpu_fused as cf
from llmscratch.ops.adamw import AdamWStep, adamw_update, grad_norm
from llmscratch.util.errors import ConfigError, DataError, ShapeError

CPU_IDS = ("numpy", "torch")
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
KERNEL_PATHS = ("native-openmp", "native-serial", "avx2-openmp")  # instruction set - build


@pytest.fixture(params=KERNEL_PATHS)
def kernel_path(request, monkeypatch):
    """Run the test on one build of the kernels (see the module docstring)."""
    isa, build = request.param.split("-")
    if isa == "avx2" and not cpu_build.has_avx512():
        pytest.skip("this CPU has no AVX-512: its native build is the AVX2 one")
    monkeypatch.setenv(cpu_build.ISA_VARIABLE, isa)
    if build == "serial":
        monkeypatch.setattr(cpu_build, "threaded", lambda: None)
    return request.param


@pytest.fixture(params=[(b, d) for b in CPU_IDS for d in TOLERANCE], ids=lambda p: f"{p[0]}-{p[1]}")
def bk(request, kernel_path):
    backend = make_backend(*request.param)
    if reason := cpu_build.unavailable(backend):
        pytest.skip(reason)
    return backend


def close(bk, got, want) -> bool:
    return rel_err(bk.to_numpy(got), bk.to_numpy(want)) <= TOLERANCE[bk.dtype_name]


@pytest.mark.parametrize(
    "M, K, N",
    [
        (768, 128, 512),  # c_fc of shakespeare_char_cpu: packed B kept in cache, row tiles outside
        (64, 768, 512),  # a weight gradient's shape: packed B too big for that, panels outside
        (7, 5, 3),  # everything short of one tile
        (33, 70, 65),  # remainders of the 8-row tile and of the panel
        (1, 1, 1),
        (9, 0, 4),  # K = 0: the bias alone
        (0, 3, 4),
    ],
)
@pytest.mark.parametrize("a_transposed, b_transposed", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("bias", [True, False])
def test_matmul_matches_array_api(bk, M, K, N, a_transposed, b_transposed, bias, rng):
    """Either operand may be a transposed view, as the linear layers' backward passes them (d·wᵀ, xᵀ·d)."""
    xp = bk.xp

    def operand(rows, cols, transposed):
        if transposed:
            return xp.matrix_transpose(bk.from_numpy(rng.standard_normal((cols, rows))))
        return bk.from_numpy(rng.standard_normal((rows, cols)))

    a, b = operand(M, K, a_transposed), operand(K, N, b_transposed)
    c = bk.from_numpy(rng.standard_normal(N)) if bias else None
    got, want = cf.gemm(bk, a, b, c), ops.matmul(bk, a, b, c)
    assert tuple(got.shape) == (M, N)
    assert close(bk, got, want)
    assert close(bk, cf.matmul(bk, a, b, c), want)  # whichever of the two measured faster


@pytest.mark.parametrize("M, K, N", [(1, 768, 2304), (1, 130, 3000), (4, 45, 19), (9, 333, 517), (5, 1, 3), (0, 8, 4)])
@pytest.mark.parametrize("fmt, group", [("int8", None), ("int4", 32), ("int4", 6)])
@pytest.mark.parametrize("bias, transposed", [(True, False), (False, True)])
def test_quantized_matmul_matches_array_api(bk, M, K, N, fmt, group, bias, transposed, rng):
    """A decoding step's row, the beams' rows, a K that no group divides, an N that is no whole vector, panels
    of rows and columns with remainders; a weight quantized from a transposed view (an LM head's Wᵀ)."""
    w = (
        bk.xp.matrix_transpose(bk.from_numpy(rng.standard_normal((N, K))))
        if transposed
        else rng.standard_normal((K, N))
    )
    qw = ops.quantize_weight(bk, w if transposed else bk.from_numpy(w), fmt, group)
    a = bk.from_numpy(rng.standard_normal((M, K)))
    c = bk.from_numpy(rng.standard_normal(N)) if bias else None
    got, want = cf.quantized_matmul(bk, a, qw, c), ops.quantized_matmul(bk, a, qw, c)
    assert tuple(got.shape) == (M, N)
    assert M == 0 or close(bk, got, want)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (12, 64, 65), (40, 1000)])
def test_cross_entropy_matches_array_api(bk, shape, rng):
    """Loss and gradient on rows with and without an ignored target, at the model's shape and a wide vocabulary."""
    V = shape[-1]
    logits = bk.from_numpy(rng.standard_normal(shape) * 3)
    ids = rng.integers(0, V, shape[:-1])
    ids.reshape(-1)[::3] = -100  # every third row ignored
    targets = bk.from_numpy(ids)
    loss, cache = cf.cross_entropy_forward(bk, logits, targets)
    ref, ref_cache = ops.cross_entropy_forward(bk, logits, targets)
    assert close(bk, loss, ref)
    assert close(bk, cf.cross_entropy_backward(bk, 0.7, cache), ops.cross_entropy_backward(bk, 0.7, ref_cache))


def test_cross_entropy_checks_its_targets(bk):
    """An out-of-range or non-integer target gets the Array API op's error; all targets ignored: loss 0, gradient 0."""
    logits = bk.zeros((2, 3, 5))
    for op in (cf.cross_entropy_forward, ops.cross_entropy_forward):
        with pytest.raises(ShapeError, match=r"cross_entropy_forward: ids must be integers"):
            op(bk, logits, bk.zeros((2, 3)))
    for bad in (5, -1):
        targets = bk.from_numpy(np.array([[0, 1, 2], [3, bad, 4]]))
        for op in (cf.cross_entropy_forward, ops.cross_entropy_forward):
            with pytest.raises(DataError, match=rf"cross_entropy_forward: id {bad} is out of range .* of 5"):
                op(bk, logits, targets)
    loss, cache = cf.cross_entropy_forward(bk, logits, bk.from_numpy(np.full((2, 3), -100)))
    assert float(loss) == 0.0 and not np.any(bk.to_numpy(cf.cross_entropy_backward(bk, 1.0, cache)))


@pytest.mark.parametrize("shape", [(1, 3), (3, 7), (2, 5, 33), (12, 64, 128)])
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_array_api(bk, shape, bias, rng):
    C = shape[-1]
    x = bk.from_numpy(rng.standard_normal(shape) * 3 + 1)
    w, b = bk.from_numpy(rng.standard_normal(C)), bk.from_numpy(rng.standard_normal(C)) if bias else None
    dout = bk.from_numpy(rng.standard_normal(shape))
    out, cache = cf.layernorm_forward(bk, x, w, b, 1e-5)
    ref, ref_cache = ops.layernorm_forward(bk, x, w, b, 1e-5)
    assert close(bk, out, ref)
    grads, ref_grads = cf.layernorm_backward(bk, dout, cache), ops.layernorm_backward(bk, dout, ref_cache)
    for got, want in zip(grads, ref_grads, strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            assert close(bk, got, want)


@pytest.mark.parametrize("n", [1, 17, 12 * 64 * 512])
def test_gelu_matches_array_api(bk, n, rng):
    x = bk.from_numpy(rng.standard_normal(n) * 4)
    dout = bk.from_numpy(rng.standard_normal(n))
    out, cache = cf.gelu_forward(bk, x)
    ref, ref_cache = ops.gelu_forward(bk, x)
    assert close(bk, out, ref)
    assert close(bk, cf.gelu_backward(bk, dout, cache), ops.gelu_backward(bk, dout, ref_cache))


def test_gelu_exact_form_is_left_to_the_array_api_op(bk, rng):
    x, dout = (bk.from_numpy(rng.standard_normal((4, 9))) for _ in range(2))
    out, cache = cf.gelu_forward(bk, x, "exact")
    ref, ref_cache = ops.gelu_forward(bk, x, "exact")
    assert close(bk, out, ref)
    assert close(bk, cf.gelu_backward(bk, dout, cache), ops.gelu_backward(bk, dout, ref_cache))


def test_gelu_extremes_and_nan(bk):
    """Large |x| saturates like the Array API op (x or 0, never inf/NaN); NaN stays NaN."""
    x = bk.from_numpy(np.array([-1e4, -90.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 90.0, 1e4, np.nan]))
    out, cache = cf.gelu_forward(bk, x)
    ref, ref_cache = ops.gelu_forward(bk, x)
    got, want = bk.to_numpy(out), bk.to_numpy(ref)
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[bk.dtype_name], atol=1e-30, equal_nan=True)
    assert np.isnan(got[-1]) and np.all(np.isfinite(got[:-1]))
    dx = bk.to_numpy(cf.gelu_backward(bk, bk.from_numpy(np.ones(10)), cache))
    np.testing.assert_allclose(
        dx,
        bk.to_numpy(ops.gelu_backward(bk, bk.from_numpy(np.ones(10)), ref_cache)),
        rtol=TOLERANCE[bk.dtype_name],
        atol=1e-30,
        equal_nan=True,
    )


def test_float32_exp_approximation_is_accurate():
    """The float32 kernels use a polynomial e^x. Through GELU, measured in float32 ulps against float64 truth,
    it is as accurate as the Array API op computing in float32 with the library's exp (both ~12 ulps at worst,
    from rounding -2u before the exponential)."""
    bk = make_backend("numpy", "float32")
    if reason := cpu_build.unavailable(bk):
        pytest.skip(reason)
    x = np.linspace(-12, 12, 200_001).astype(np.float32)
    x64 = x.astype(np.float64)
    truth = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    big = np.abs(truth) > 1e-3  # near 0 the float32 inputs of the formula already dominate
    ulp = np.spacing(np.abs(truth[big]).astype(np.float32))
    ours = np.abs(cf.gelu_forward(bk, x)[0] - truth)[big] / ulp
    array_api = np.abs(ops.gelu_forward(bk, x)[0] - truth)[big] / ulp
    assert ours.max() <= array_api.max() + 1, (ours.max(), array_api.max())
    assert np.percentile(ours, 99) <= np.percentile(array_api, 99) + 0.5


def test_non_contiguous_inputs(bk, rng):
    """Transposed views are made contiguous first, not read with the wrong strides."""
    x = bk.xp.matrix_transpose(bk.from_numpy(rng.standard_normal((16, 6))))  # (6,16) view
    w = bk.from_numpy(rng.standard_normal(16))
    out, _ = cf.layernorm_forward(bk, x, w)
    assert close(bk, out, ops.layernorm_forward(bk, x, w)[0])
    g, _ = cf.gelu_forward(bk, x)
    assert close(bk, g, ops.gelu_forward(bk, x)[0])


@pytest.mark.parametrize(
    "B, H, Hkv, T, S, D, causal, masked",
    [
        (2, 4, 4, 64, 64, 32, True, False),  # the shakespeare_char_cpu shape
        (1, 2, 2, 5, 5, 3, True, False),  # D and S well short of a vector
        (2, 4, 2, 7, 11, 20, True, True),  # kv cache (S > T), GQA, padded keys
        (2, 4, 1, 9, 9, 40, False, False),  # MQA; D over two vectors of float64, not of float32
        (1, 3, 3, 1, 13, 8, True, False),  # one query
        (2, 6, 2, 17, 17, 64, True, True),
        (1, 1, 1, 70, 70, 130, True, False),  # D over several pairs of vectors, with a remainder
    ],
)
def test_tiled_attention_reads_and_writes_head_views(bk, B, H, Hkv, T, S, D, causal, masked, rng):
    """cpu-tiled takes q, k, v as the strided head views of a fused projection (as the model passes them) and
    returns out, dq, dk, dv as views of (B,T,heads,D) arrays; every tile shape and remainder against naive."""
    xp = bk.xp
    qkv = xp.permute_dims(bk.from_numpy(rng.standard_normal((B, T, H + 2 * Hkv, D))), (0, 2, 1, 3))
    kv = xp.permute_dims(bk.from_numpy(rng.standard_normal((B, S, 2 * Hkv, D))), (0, 2, 1, 3))
    q, k, v = qkv[:, :H, ...], kv[:, :Hkv, ...], kv[:, Hkv:, ...]
    mask = bk.from_numpy(rng.random((B, S)) > 0.3) if masked else None
    dout = xp.permute_dims(bk.from_numpy(rng.standard_normal((B, T, H, D))), (0, 2, 1, 3))
    out, cache = cf.tiled_attention_forward(bk, q, k, v, causal=causal, key_mask=mask)
    ref, ref_cache = ops.attention_forward(bk, q, k, v, causal=causal, key_mask=mask)
    assert close(bk, out, ref)
    assert bk.strides(xp.permute_dims(out, (0, 2, 1, 3)))[-1] == 1 and bk.strides(out)[2] == H * D
    grads = cf.tiled_attention_backward(bk, dout, cache)
    for got, want in zip(grads, ops.attention_backward(bk, dout, ref_cache), strict=True):
        assert close(bk, got, want)


def test_adamw_update_matches_array_api_over_many_steps(bk, rng):
    """Several tensors (a few past one chunk of the kernel's work split), with and without decay and clipping."""
    shapes = [(37, 5), (40000,), (3,), (130, 300)]
    decays = [0.9999, 1.0, 1.0, 0.9999]
    p1 = [bk.from_numpy(rng.standard_normal(s)) for s in shapes]
    p2 = [bk.xp.asarray(p, copy=True) for p in p1]
    m1, v1, m2, v2 = ([bk.zeros(s) for s in shapes] for _ in range(4))
    for t in range(1, 21):
        grads = [bk.from_numpy(rng.standard_normal(s) * 1e-2) for s in shapes]
        scale = None if t % 2 else bk.xp.asarray(0.5 + t / 100, dtype=bk.dtype)
        args = (decays, AdamWStep.at(t, 1e-3, (0.9, 0.99), 1e-8), scale)
        cf.adamw_update(bk, p1, grads, m1, v1, *args)
        adamw_update(bk, p2, grads, m2, v2, *args)
    for got, want in zip(p1 + m1 + v1, p2 + m2 + v2, strict=True):
        assert close(bk, got, want)


def test_grad_norm_matches_array_api(bk, rng):
    grads = [bk.from_numpy(rng.standard_normal(s)) for s in [(37, 5), (40000,), (3,), (130, 300)]]
    assert close(bk, cf.grad_norm(bk, grads), grad_norm(bk, grads))
    assert close(bk, cf.grad_norm(bk, grads[2:3]), bk.xp.sqrt(bk.xp.sum(grads[2] ** 2)))


def test_op_sets_have_the_same_functions():
    assert set(OP_SETS) == {"array-api", "cpu-fused"}
    fields = [f for f in vars(OP_SETS["array-api"]) if f != "name"]
    assert all(callable(getattr(s, f)) for s in OP_SETS.values() for f in fields)


def test_refused_where_they_cannot_run():
    strict = make_backend("strict", "float64")
    with pytest.raises(ConfigError, match=r"cpu-fused kernels run on numpy and torch on the CPU.*use ops='array-api'"):
        get_ops("cpu-fused", strict)
    with pytest.raises(ConfigError, match="runs on the numpy/torch backend"):
        get_attention_kernel("cpu-tiled", strict)
    with pytest.raises(ConfigError, match=r"unknown op set 'cpu-fuse'.*did you mean 'cpu-fused'"):
        get_ops("cpu-fuse", strict)
    assert default_ops("strict") == "array-api"
    assert default_ops("torch", "cuda") == "array-api" and default_attention_kernel("torch", 64, "cuda") == "sdpa"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_dtypes_run_through_float32(dtype, rng):
    """On a 16-bit torch backend the kernels take widened inputs and round their results back: each equals the
    Array API op in that dtype to the dtype's tolerance, caches stay float32, and a 16-bit AdamW (dtype=bfloat16,
    no master weights) goes to the Array API update."""
    from test_ops import HALF_TOLERANCE

    bk = make_backend("torch", dtype)
    if reason := cpu_build.unavailable(bk):
        pytest.skip(reason)
    tol = HALF_TOLERANCE[dtype]

    def near(got, want):
        assert got.dtype == want.dtype
        return rel_err(bk.to_numpy(got), bk.to_numpy(want)) <= tol

    x, w, b = (bk.from_numpy(rng.standard_normal(s)) for s in ((4, 9, 48), (48,), (48,)))
    out, cache = cf.layernorm_forward(bk, x, w, b)
    ref, ref_cache = ops.layernorm_forward(bk, x, w, b)
    assert near(out, ref) and cache[0].dtype == bk.xp.float32
    assert all(
        near(g, r)
        for g, r in zip(cf.layernorm_backward(bk, x, cache), ops.layernorm_backward(bk, x, ref_cache), strict=True)
    )
    a, m = bk.from_numpy(rng.standard_normal((70, 48))), bk.from_numpy(rng.standard_normal((48, 33)))
    assert near(cf.gemm(bk, a, m, b[:33]), ops.matmul(bk, a, m, b[:33])) and near(cf.matmul(bk, a, m), a @ m)
    q, k, v = (bk.from_numpy(rng.standard_normal((2, 2, 9, 8))) for _ in range(3))
    out, cache = cf.tiled_attention_forward(bk, q, k, v)
    ref, ref_cache = ops.attention_forward(bk, q, k, v)
    assert near(out, ref)
    assert all(
        near(g, r)
        for g, r in zip(
            cf.tiled_attention_backward(bk, out, cache), ops.attention_backward(bk, out, ref_cache), strict=True
        )
    )
    loss, cache = cf.cross_entropy_forward(bk, a, bk.from_numpy(rng.integers(0, 48, 70)))
    assert loss.dtype == bk.xp.float32 and cf.cross_entropy_backward(bk, 1.0, cache).dtype == bk.dtype
    params, grads = [bk.from_numpy(rng.standard_normal((5, 3)))], [bk.from_numpy(rng.standard_normal((5, 3)))]
    ms, vs = [bk.zeros((5, 3))], [bk.zeros((5, 3))]
    want = [p * 1 for p in params]
    adamw_update(bk, want, grads, [m * 1 for m in ms], [v * 1 for v in vs], [0.9], AdamWStep(0.9, 0.99, 0.1, 1.0, 1e-8))
    cf.adamw_update(bk, params, grads, ms, vs, [0.9], AdamWStep(0.9, 0.99, 0.1, 1.0, 1e-8))
    assert bool(bk.xp.all(params[0] == want[0]))


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=os.environ | env
    )


def test_without_a_compiler_auto_keeps_the_array_api_ops(tmp_path):
    """No compiler: ops="auto" falls back quietly; asking for cpu-fused gives a one-line error."""
    result = _python(
        """
        import llmscratch
        from llmscratch.training.config import resolve_config
        cfg = resolve_config(backend="numpy")
        model = llmscratch.GPT(cfg.model_config(10), "numpy", attention=cfg.attention, ops=cfg.ops)
        print(model.op_set.name, model.kernel.name)
        try:
            llmscratch.GPT(llmscratch.GPTConfig(vocab_size=10), "numpy", ops="cpu-fused")
        except llmscratch.LLMScratchError as e:
            print(e)
        """,
        CXX=str(tmp_path / "no-such-compiler"),
        LLMSCRATCH_CACHE_DIR=str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    fallback, error = result.stdout.strip().splitlines()
    assert fallback == "array-api naive"
    assert error == "the cpu-fused kernels need a C++ compiler (install g++ or set $CXX); use ops='array-api'"


def test_a_failing_compiler_is_reported_in_one_line(tmp_path):
    fake = tmp_path / "broken-c++"
    fake.write_text("#!/bin/sh\necho 'fatal error: something is missing' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = _python(
        """
        from llmscratch.kernels import cpu_build
        from llmscratch.backends import get_backend
        print(cpu_build.unavailable(get_backend("numpy")))
        """,
        CXX=str(fake),
        LLMSCRATCH_CACHE_DIR=str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == f"compiling the cpu-fused kernels with {fake} failed (fatal error: something is missing)"
    )
    assert not list((tmp_path / "cache").rglob("*.so"))  # nothing half-written left behind


def test_the_kernels_compile_wherever_there_is_a_compiler():
    """An error in fused.cpp must fail the suite, not quietly skip every test of its kernels."""
    if cpu_build._compiler() is None:
        pytest.skip("no C++ compiler here")
    assert cpu_build.compiles(), cpu_build._build("serial", cpu_build.isa())[1]


def test_compiled_once_into_the_cache(tmp_path):
    if not cpu_build.compiles():
        pytest.skip("no C++ compiler here")
    code = "from llmscratch.kernels import cpu_build; print(cpu_build.compiles())"
    first = _python(code, LLMSCRATCH_CACHE_DIR=str(tmp_path))
    assert first.stdout.strip() == "True", first.stderr
    (lib,) = (tmp_path / "kernels").glob("cpu-fused-*.so")
    stamp = lib.stat().st_mtime_ns
    assert _python(code, LLMSCRATCH_CACHE_DIR=str(tmp_path)).stdout.strip() == "True"
    assert lib.stat().st_mtime_ns == stamp and len(list((tmp_path / "kernels").iterdir())) == 1


def test_ops_benchmark_reports_every_op_set(bk):
    from llmscratch.cli.bench.ops import bench_ops

    records = bench_ops([bk], rounds=1, calls=1)
    assert {r["ops"] for r in records} == {"array-api", "cpu-fused"}
    assert len({r["op"] for r in records}) == 10
    assert all(r["time_us"] > 0 for r in records)
    assert all(r["vs_array_api"] == 1.0 for r in records if r["ops"] == "array-api")


def test_a_damaged_cached_library_is_reported(tmp_path):
    if not cpu_build.compiles():
        pytest.skip("no C++ compiler here")
    code = "from llmscratch.kernels import cpu_build; print(cpu_build.compiles())"
    assert _python(code, LLMSCRATCH_CACHE_DIR=str(tmp_path)).stdout.strip() == "True"
    (lib,) = (tmp_path / "kernels").glob("cpu-fused-*.so")
    lib.write_bytes(b"not a shared library")
    check = "from llmscratch.kernels import cpu_build; print(cpu_build.library())"
    result = _python(check, LLMSCRATCH_CACHE_DIR=str(tmp_path))
    assert result.returncode == 1
    assert f"cannot load the cpu-fused kernels from {lib}" in result.stderr.strip().splitlines()[-1]
    assert "delete that file to rebuild it" in result.stderr
