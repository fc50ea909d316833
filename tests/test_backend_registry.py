"""The backend registry: a backend registered in code, or offered by an installed package through the
``llmscratch.backends`` entry point group, trains like a built-in one; every list of backends comes from the
registry; bad registrations and broken plugins are one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import flags, tiny

import llmscratch
from llmscratch import backends
from llmscratch.backends.numpy_backend import NumpyBackend
from llmscratch.util.errors import BackendError

TINY = tiny(max_iters=3, eval_interval=3, eval_iters=1, dtype="float64", progress=False)
SAME_KERNELS = dict(ops="array-api", attention="naive")  # numpy's fused C++ kernels go by the name "numpy"


class CountingBackend(NumpyBackend):
    """NumPy, counting the arrays copied onto it: proof that the run went through this class."""

    name = "counting"
    copies = 0

    def _from_numpy(self, a, dtype):
        CountingBackend.copies += 1
        return super()._from_numpy(a, dtype)


@pytest.fixture
def registered():
    llmscratch.register_backend("counting", CountingBackend, summary="NumPy, counting copies")
    yield
    backends._REGISTRY.pop("counting")


def test_a_backend_registered_in_code_trains_like_the_one_it_wraps(registered):
    assert "counting" in llmscratch.backend_names() and "counting" in llmscratch.available_backends()
    CountingBackend.copies = 0
    counted = llmscratch.train(backend="counting", **TINY, **SAME_KERNELS)
    assert CountingBackend.copies > 0 and counted.model.bk.name == "counting"
    plain = llmscratch.train(backend="numpy", **TINY, **SAME_KERNELS)
    assert [h["train_loss"] for h in counted.history] == [h["train_loss"] for h in plain.history]


def test_registering_badly_is_one_line(registered):
    with pytest.raises(BackendError, match="already registered; pass replace=True"):
        llmscratch.register_backend("counting", CountingBackend)
    with pytest.raises(BackendError, match="must be a plain identifier"):
        llmscratch.register_backend("no good", CountingBackend)
    with pytest.raises(BackendError, match="'float8' is not a 16-bit dtype"):
        llmscratch.register_backend("other", CountingBackend, half_dtypes=("float8",))
    with pytest.raises(BackendError, match=r"unknown backend 'countin' \(did you mean 'counting'\?\); available here"):
        llmscratch.get_backend("countin")
    with pytest.raises(BackendError, match=r"the counting backend has no bfloat16; .* torch"):
        llmscratch.get_backend("counting", dtype="bfloat16")


def test_the_built_ins_are_registered_as_any_other():
    names = llmscratch.backend_names()
    assert names[:5] == ("numpy", "torch", "cupy", "jax", "strict")
    assert backends.half_dtypes("torch") == ("bfloat16", "float16") and backends.half_dtypes("numpy") == ()
    assert backends.backends_with("float16") == ["torch", "cupy", "jax"]


def plugin_package(root: Path, name: str, module_source: str, target: str) -> None:
    """An installed distribution, as pip would leave it: the module and its .dist-info with the entry point."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[llmscratch.backends]\n{target}\n")


def test_a_package_with_an_entry_point_adds_a_backend_that_trains(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    plugin_package(
        site,
        "toy_backend",
        """
        from llmscratch.backends.numpy_backend import NumpyBackend

        class ToyBackend(NumpyBackend):
            name = "toy"
            summary = "NumPy under another name"
            made = []

            def __init__(self, device, dtype):
                super().__init__(device, dtype)
                print("toy backend made", flush=True)
        """,
        "toy = toy_backend:ToyBackend",
    )
    plugin_package(site, "broken_backend", "raise ImportError('needs libfoo')\n", "broken = broken_backend:Nothing")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run(
        [sys.executable, "-c", "import llmscratch; print(llmscratch.backend_names(), llmscratch.available_backends())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    names, available = listed.stdout.strip().split(") [")
    assert "'toy'" in names and "'broken'" in names and "'toy'" in available and "'broken'" not in available
    out = tmp_path / "run"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmscratch",
            "train",
            "--backend",
            "toy",
            "--out",
            str(out),
            "--quiet",
            "--sample-tokens",
            "0",
            *flags(**tiny(max_iters=2, eval_interval=2, eval_iters=1)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "toy backend made" in run.stdout, run.stderr[-2000:]
    assert llmscratch.load(out, backend="numpy").step == 2  # the checkpoint is the same format on any backend
    broken = subprocess.run(
        [sys.executable, "-m", "llmscratch", "train", "--backend", "broken", "--max-iters", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = broken.stderr.strip()
    assert broken.returncode == 2 and len(err.splitlines()) == 1
    assert "the backend plugin broken_backend:Nothing could not be loaded (ImportError: needs libfoo)" in err


def test_every_backend_list_comes_from_the_registry(registered, capsys):
    from llmscratch.cli import main
    from llmscratch.cli.bench.common import backend_list

    assert backend_list("numpy,counting") == ["numpy", "counting"]
    assert main(["train", "--backend", "nope", "--max-iters", "1"]) == 2
    assert "counting" in capsys.readouterr().err  # the error lists what is available, the new one included
