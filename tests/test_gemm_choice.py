"""The own-GEMM-or-vendor choice (llmscratch/kernels/gemm_choice.py): measured per shape class, confirmed,
written down, read back, forced by LLMSCRATCH_GEMM; and the contest's other end, that numpy's BLAS gives up
its threads once the OpenMP kernels run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import make_backend

from llmscratch.kernels import gemm_choice
from llmscratch.kernels.gemm_choice import CONFIRM_AT, GemmChoices, shape_class
from llmscratch.util.errors import ConfigError


def _operands(bk, M, K, N, transposed_b=False):
    rng = np.random.default_rng(0)
    a = bk.from_numpy(rng.standard_normal((M, K)))
    b = bk.from_numpy(rng.standard_normal((N, K) if transposed_b else (K, N)))
    return a, (bk.xp.matrix_transpose(b) if transposed_b else b)


def test_shape_classes_round_to_powers_of_two_and_tell_layouts_apart():
    bk = make_backend("numpy", "float32")
    a, b = _operands(bk, 768, 128, 512)
    assert shape_class(bk, a, b) == f"numpy/float32/{bk.threads()}t/nn/1024x512x128"
    assert shape_class(bk, *_operands(bk, 800, 120, 500)) == shape_class(bk, a, b)
    assert "/nt/" in shape_class(bk, *_operands(bk, 768, 128, 512, transposed_b=True))
    assert "/tn/" in shape_class(bk, bk.xp.matrix_transpose(b), a[:512, :])


def _candidates(slow: str, calls: dict[str, int]):
    def run(name):
        def go():
            calls[name] += 1
            time.sleep(0.002 if name == slow else 0.0)

        return go

    return {name: run(name) for name in ("own", "vendor")}


def test_the_faster_is_chosen_confirmed_and_written_down(tmp_path, monkeypatch):
    monkeypatch.delenv(gemm_choice.FORCE_VARIABLE, raising=False)
    bk = make_backend("numpy", "float32")
    a, b = _operands(bk, 64, 32, 16)
    path = tmp_path / "choices.json"
    choices, calls = GemmChoices(path), {"own": 0, "vendor": 0}
    candidates = _candidates("vendor", calls)
    assert choices.choose(bk, a, b, candidates) == "own"
    per_measurement = dict(calls)  # one warm-up and REPEATS timed runs each
    assert per_measurement == {"own": 1 + gemm_choice.REPEATS, "vendor": 1 + gemm_choice.REPEATS}
    assert not path.exists()  # provisional until confirmed
    for _ in range(CONFIRM_AT - 2):
        assert choices.choose(bk, a, b, candidates) == "own"
    assert calls == per_measurement and not path.exists()
    assert choices.choose(bk, a, b, candidates) == "own"  # the CONFIRM_AT-th: measured again, written
    assert calls == {k: 2 * v for k, v in per_measurement.items()}
    saved = json.loads(path.read_text())[shape_class(bk, a, b)]
    assert saved["choice"] == "own" and saved["vendor_us"] > saved["own_us"]
    later, calls_later = GemmChoices(path), {"own": 0, "vendor": 0}
    assert later.choose(bk, a, b, _candidates("own", calls_later)) == "own"  # read back, not measured
    assert calls_later == {"own": 0, "vendor": 0}


def test_llmscratch_gemm_forces_a_path(tmp_path, monkeypatch):
    bk = make_backend("numpy", "float32")
    a, b = _operands(bk, 64, 32, 16)
    calls = {"own": 0, "vendor": 0}
    monkeypatch.setenv(gemm_choice.FORCE_VARIABLE, "vendor")
    assert GemmChoices(tmp_path / "c.json").choose(bk, a, b, _candidates("vendor", calls)) == "vendor"
    assert calls == {"own": 0, "vendor": 0}
    monkeypatch.setenv(gemm_choice.FORCE_VARIABLE, "blas")
    with pytest.raises(ConfigError, match="LLMSCRATCH_GEMM='blas': use own, vendor or measure"):
        gemm_choice.forced()


def test_numpy_blas_gives_its_threads_to_the_openmp_kernels():
    """In a fresh process: OpenBLAS has every core until a fused kernel runs on numpy, then one thread."""
    code = (
        "import json, numpy as np\n"
        "from threadpoolctl import threadpool_info\n"
        "from llmscratch.backends import get_backend\n"
        "from llmscratch.kernels import cpu_build, cpu_fused\n"
        "blas = lambda: [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "bk = get_backend('numpy')\n"
        "before = blas()\n"
        "cpu_fused.layernorm_forward(bk, bk.from_numpy(np.ones((4, 8))), bk.from_numpy(np.ones(8)))\n"
        "print(json.dumps([before, blas(), cpu_build.threaded() is not None]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, threaded = json.loads(run.stdout)
    if not threaded:
        pytest.skip("the OpenMP build does not compile here")
    assert before and after == [1] * len(before)
