"""Checkpoints: round trips, crashes mid-write never replace the last good one, corrupt files are refused."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import tiny

import llmscratch
from llmscratch.util.errors import CheckpointError, TokenizerError

checkpoint_module = sys.modules["llmscratch.training.checkpoint"]
TINY = tiny(n_embd=8, block_size=8, batch_size=2, eval_iters=1, progress=False)


@pytest.fixture
def trained(tmp_path):
    out = tmp_path / "run"
    result = llmscratch.train(max_iters=4, eval_interval=2, out_dir=str(out), **TINY)
    return out, result


def test_layout_and_round_trip(trained):
    out, result = trained
    ckpt_dirs = checkpoint_module.checkpoints(out)  # steps 4 and 2: the newest two are kept
    assert [d.name[:11] for d in ckpt_dirs] == ["ckpt-000004", "ckpt-000002"]
    assert (out / "LATEST").read_text().strip() == ckpt_dirs[0].name
    assert {p.name for p in ckpt_dirs[0].iterdir()} == set(checkpoint_module.FILES)
    ckpt = llmscratch.load(out)
    assert ckpt.step == 4 and ckpt.path == ckpt_dirs[0]
    for name, p in result.model.params.items():
        np.testing.assert_array_equal(ckpt.model.bk.to_numpy(ckpt.model.params[name]), result.model.bk.to_numpy(p))
    assert ckpt.tokenizer.to_dict() == result.tokenizer.to_dict()
    assert llmscratch.load(ckpt_dirs[0]).step == 4  # the checkpoint directory itself works too


def test_load_onto_another_backend(trained):
    pytest.importorskip("torch")
    out, result = trained
    ckpt = llmscratch.load(out, backend="torch", dtype="float64")
    assert ckpt.model.bk.name == "torch"
    x = np.array([[1, 2, 3]])
    a = result.model.bk.to_numpy(result.model.forward(x)[0])
    b = ckpt.model.bk.to_numpy(ckpt.model.forward(x)[0])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ckpt.sample("d", 5, seed=0).startswith("d")


def test_kernels_that_do_not_run_there_are_swapped_on_load(trained):
    """A run on numpy used the C++ kernels (where they compile); on strict the same weights load with the Array
    API ones, and compute the same logits."""
    out, result = trained
    ckpt = llmscratch.load(out, backend="strict", dtype="float64")
    assert (ckpt.model.kernel.name, ckpt.model.op_set.name) == ("naive", "array-api")
    assert ckpt.config.backend == result.model.bk.name == "numpy"
    x = np.array([[1, 2, 3]])
    a = result.model.bk.to_numpy(result.model.forward(x)[0])
    np.testing.assert_allclose(ckpt.model.bk.to_numpy(ckpt.model.forward(x)[0]), a, rtol=1e-5, atol=1e-6)


def test_resume_with_other_kernels_continues(trained):
    """attention and ops say how, not what, a model computes: resuming may change them."""
    out, _ = trained
    result = llmscratch.train(
        max_iters=6, eval_interval=2, out_dir=str(out), resume=True, attention="naive", ops="array-api", **TINY
    )
    assert result.history[-1]["step"] == 6
    assert (result.model.kernel.name, result.model.op_set.name) == ("naive", "array-api")


@pytest.mark.parametrize(
    "backend, dtype, stored",
    [
        ("numpy", "float64", "F64"),
        ("numpy", "float32", "F32"),
        ("torch", "float64", "F64"),
    ],
)
def test_checkpoints_store_the_dtype_they_trained_in(tmp_path, backend, dtype, stored):
    """Weights and moments are written in the run's own dtype, bit for bit (never through another float type)."""
    pytest.importorskip("torch")
    result = llmscratch.train(max_iters=2, eval_interval=2, out_dir=str(tmp_path), backend=backend, dtype=dtype, **TINY)
    ckpt = llmscratch.load(tmp_path, backend=backend, dtype=dtype)
    for file in ("model.safetensors", "optimizer.safetensors"):
        raw = (ckpt.path / file).read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {stored}, file
    for name, p in result.model.params.items():
        np.testing.assert_array_equal(ckpt.model.bk.to_numpy(ckpt.model.params[name]), result.model.bk.to_numpy(p))


def test_bfloat16_checkpoint_round_trip(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bf16"
    result = llmscratch.train(max_iters=2, eval_interval=2, out_dir=str(out), backend="torch", dtype="bfloat16", **TINY)
    ckpt = llmscratch.load(out)
    assert ckpt.model.bk.dtype_name == "bfloat16"
    for name, p in result.model.params.items():
        np.testing.assert_array_equal(ckpt.model.bk.to_numpy(ckpt.model.params[name]), result.model.bk.to_numpy(p))


def test_crash_while_writing_keeps_the_last_good_checkpoint(trained, monkeypatch):
    out, _ = trained
    good = (out / "LATEST").read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint_module, "tensors_to_bytes", crash)  # dies halfway through a save
    with pytest.raises(OSError, match="simulated"):
        llmscratch.train(max_iters=8, eval_interval=2, out_dir=str(out), resume=True, **TINY)
    assert (out / "LATEST").read_text() == good
    assert llmscratch.load(out).step == 4
    monkeypatch.undo()
    llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(out), resume=True, **TINY)
    assert not list(out.glob(".tmp-*")), "the next save cleans up what the crash left"
    assert llmscratch.load(out).step == 6


def test_crash_before_the_pointer_moves_keeps_the_old_one(trained, monkeypatch):
    out, _ = trained
    monkeypatch.setattr(checkpoint_module, "atomic_write", lambda *a: (_ for _ in ()).throw(OSError("power cut")))
    with pytest.raises(OSError, match="power cut"):
        llmscratch.train(max_iters=8, eval_interval=2, out_dir=str(out), resume=True, **TINY)
    assert llmscratch.load(out).step == 4  # the new directory exists but LATEST still names the old one


def test_truncated_weights_are_refused(trained):
    out, _ = trained
    ckpt = checkpoint_module.checkpoints(out)[0]
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"model\.safetensors is damaged: {len(data) // 2} bytes, {len(data)}"):
        llmscratch.load(out)
    (ckpt / checkpoint_module.DIGESTS).unlink()  # without the record, the parser still refuses it
    (ckpt / "state.json").write_text(json.dumps(json.loads((ckpt / "state.json").read_text()) | {"format_version": 2}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt"):
        llmscratch.load(out)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        (lambda d: (d / "state.json").unlink(), "state.json is missing"),
        (lambda d: (d / "tokenizer.json").write_text('{"type": "sentencepiece"}'), "is not a llmscratch tokenizer"),
        (
            lambda d: (d / "tokenizer.json").write_text('{"type": "char", "chars": "ab"}'),
            "the tokenizer gives 2 token ids but the model",
        ),
        (
            lambda d: (d / "config.json").write_text(
                json.dumps({"train": {}, "model": {"n_layer": 2, "vocab_size": 96}})
            ),
            "does not match its config",
        ),
        (lambda d: (d / "config.json").write_text(json.dumps({"train": {}, "model": {"n_layers": 2}})), "n_layers"),
    ],
)
def test_damaged_checkpoints_give_one_line_errors(trained, damage, message):
    """Each damage is caught by the digests; with them skipped (a file re-recorded as written), by the parser."""
    out, _ = trained
    ckpt = checkpoint_module.checkpoints(out)[0]
    damage(ckpt)
    with pytest.raises(CheckpointError, match=r"is (damaged|missing)") as e:
        llmscratch.load(out)
    assert "\n" not in str(e.value)
    record = json.loads((ckpt / checkpoint_module.DIGESTS).read_text())
    for name in record:
        if (ckpt / name).exists():
            record[name] = {"size": (ckpt / name).stat().st_size, "sha256": checkpoint_module._sha256(ckpt / name)}
    (ckpt / checkpoint_module.DIGESTS).write_text(json.dumps(record))
    with pytest.raises((CheckpointError, TokenizerError), match=message) as e:
        llmscratch.load(out)
    assert "\n" not in str(e.value)


def test_missing_and_empty_locations(tmp_path):
    with pytest.raises(CheckpointError, match="the directory does not exist"):
        llmscratch.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        llmscratch.load(tmp_path / "empty")
    with pytest.raises(CheckpointError, match=r"cannot resume without an output directory: pass the out_dir \(--out\)"):
        llmscratch.train(resume=True, **TINY)
    with pytest.raises(CheckpointError, match=r"cannot resume: no checkpoint in .*drop --resume"):
        llmscratch.train(out_dir=str(tmp_path / "nowhere"), resume=True, **TINY)


@pytest.mark.parametrize("optimizer_t", ["4", -1, None, True])
def test_an_optimizer_step_count_that_is_not_a_count_is_one_line_on_resume(trained, optimizer_t):
    """state.json re-recorded in digests.json, so that the count reaches AdamW.load_state_dict, which checks it."""
    out, _ = trained
    ckpt = checkpoint_module.checkpoints(out)[0]
    state = json.loads((ckpt / "state.json").read_text())
    (ckpt / "state.json").write_text(json.dumps(state | {"optimizer_t": optimizer_t}))
    record = json.loads((ckpt / checkpoint_module.DIGESTS).read_text())
    path = ckpt / "state.json"
    record["state.json"] = {"size": path.stat().st_size, "sha256": checkpoint_module._sha256(path)}
    (ckpt / checkpoint_module.DIGESTS).write_text(json.dumps(record))
    assert llmscratch.load(out).step == 4  # loading the model does not need it
    with pytest.raises(CheckpointError, match=r"the optimizer state of .*step count is .*, not a count") as e:
        llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(out), resume=True, **TINY)
    assert "\n" not in str(e.value)
