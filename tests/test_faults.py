"""Faults while training and writing: a second writer, a full or failing disk, damaged checkpoints, diverging
weights. Each ends in one line that says what happened, and what a user saved stays whole."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import flags, tiny

import llmscratch
from llmscratch.cli import main
from llmscratch.tokenizers import CharTokenizer
from llmscratch.training import checkpoint as ckpt_io
from llmscratch.training.metrics_log import read_metrics
from llmscratch.training.trainer import Trainer
from llmscratch.util import atomic
from llmscratch.util.dir_lock import DirectoryLock
from llmscratch.util.errors import (
    CheckpointError,
    ConfigError,
    DirectoryInUseError,
    TrainingDivergedError,
    WriteError,
)

TINY = tiny(n_embd=8, block_size=8, batch_size=2, eval_iters=1, progress=False)


@pytest.fixture
def run(tmp_path) -> Path:
    """A finished run of 4 steps: checkpoints at steps 2 and 4."""
    out = tmp_path / "run"
    llmscratch.train(max_iters=4, eval_interval=2, out_dir=str(out), **TINY)
    return out


def failing_disk(monkeypatch, err: int, where: str, skip: int = 0) -> list[Path]:
    """Every write to a file whose path contains ``where`` (but the first ``skip`` of them) stops halfway
    with ``err``, as a full, read-only or failing disk stops it; the other writes go through. Returns the
    paths that failed."""
    failed: list[Path] = []
    seen = []
    real = atomic._write_all

    def write(fd: int, data: bytes, path: Path) -> None:
        if where not in str(path) or len(seen) < skip:
            seen.extend([path] * (where in str(path)))
            return real(fd, data, path)
        failed.append(path)
        os.write(fd, data[: len(data) // 2])
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(atomic, "_write_all", write)
    return failed


# ---- one writer per output directory -------------------------------------------------------------------


def hold_lock(path: Path) -> subprocess.Popen:
    """A child process that holds path's lock until its stdin closes (it says so once it holds it)."""
    code = (
        "import sys; from llmscratch.util.dir_lock import DirectoryLock\n"
        f"lock = DirectoryLock({str(path)!r}, 'llmscratch train').acquire(); print('held', flush=True)\n"
        "sys.stdin.read()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_directory_in_use_refuses_every_writer_and_serves_every_reader(run, tmp_path, capsys):
    before = {p.name for p in run.iterdir()}
    child = hold_lock(run)
    try:
        named = rf"{run} is in use by llmscratch train \(pid {child.pid} on "
        with pytest.raises(DirectoryInUseError, match=named):
            llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY)
        with pytest.raises(DirectoryInUseError, match=named):
            llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), **TINY)
        with pytest.raises(DirectoryInUseError, match=named):
            llmscratch.save_hf(llmscratch.load(run), run)
        with pytest.raises(DirectoryInUseError, match=named):
            ckpt_io.convert(run, run, "llmscratch")
        assert main(["train", *flags(**tiny()), "--max-iters", "2", "--out", str(run), "--resume", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pid {child.pid}" in err
        assert {p.name for p in run.iterdir()} == before  # nothing written, nothing removed
        assert llmscratch.load(run).step == 4  # reading works meanwhile
        assert main(["sample", "--checkpoint", str(run), "--max-new-tokens", "3", "--prompt", "a"]) == 0
    finally:
        child.stdin.close()
        child.wait()
    assert (
        llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY).history[-1]["step"] == 6
    )


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    child = hold_lock(tmp_path / "run")
    child.kill()
    child.wait()
    assert (tmp_path / "run" / ".llmscratch.lock").is_file()  # the file stays; the kernel dropped the lock
    with DirectoryLock(tmp_path / "run"):
        pass
    llmscratch.train(max_iters=2, eval_interval=2, out_dir=str(tmp_path / "run"), **TINY)


def test_the_lock_is_let_go_however_the_run_ends(run, monkeypatch):
    """A run that fails while starting or while training leaves the directory free for the next one."""
    with pytest.raises(CheckpointError, match="already holds a run"):
        llmscratch.train(max_iters=2, eval_interval=2, out_dir=str(run), **TINY)
    failing_disk(monkeypatch, errno.ENOSPC, "ckpt-")
    with pytest.raises(WriteError):
        llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY)
    with DirectoryLock(run):
        pass


def test_a_new_run_into_a_finished_one_is_refused(run, capsys):
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", *flags(**tiny()), "--max-iters", "2", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and err.count("\n") == 1
    assert sorted(p.name for p in run.iterdir()) == before


# ---- a full or failing disk ----------------------------------------------------------------------------


@pytest.mark.parametrize("err", sorted(atomic.DISK_ERRORS))
def test_a_disk_error_while_saving_a_checkpoint_keeps_the_last_one(run, monkeypatch, err):
    good = (run / "LATEST").read_text()
    failed = failing_disk(monkeypatch, err, "ckpt-")
    with pytest.raises(
        WriteError, match=rf"could not write {run}/ckpt-000006-\w+: {re.escape(atomic.DISK_ERRORS[err])}"
    ) as e:
        llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY)
    assert failed and "\n" not in str(e.value) and "what was there before is unchanged" in str(e.value)
    if err in (errno.ENOSPC, errno.EDQUOT):
        assert "it needs " in str(e.value) and " is free there" in str(e.value)
    monkeypatch.undo()
    assert (run / "LATEST").read_text() == good and llmscratch.load(run).step == 4
    assert not list(run.glob(".tmp-*")) and len(ckpt_io.checkpoints(run)) == 2


def test_a_full_disk_on_the_command_line_is_one_line_and_a_failing_exit(run, monkeypatch, capsys):
    failing_disk(monkeypatch, errno.ENOSPC, "ckpt-")
    argv = ["train", "--out", str(run), "--resume", "--max-iters", "6", "--eval-interval", "2", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not write ") and "the disk is full" in err and err.count("\n") == 1


def test_a_refused_metrics_line_is_cut_back_off(run, monkeypatch):
    entries = read_metrics(run)
    failing_disk(monkeypatch, errno.ENOSPC, "metrics.jsonl", skip=1)  # the resume rewrites it, then appends
    with pytest.raises(WriteError, match=r"metrics\.jsonl: the disk is full"):
        llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY)
    monkeypatch.undo()
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(line) for line in text.splitlines()] == entries


@pytest.mark.parametrize("err", sorted(atomic.DISK_ERRORS))
def test_a_disk_error_while_saving_elsewhere_leaves_nothing(tmp_path, monkeypatch, err):
    """A Hugging Face directory, a tokenizer, a converted checkpoint: whole or absent."""
    from llmscratch.models import GPT, GPTConfig

    tok = CharTokenizer("abc")
    model = GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=2, n_embd=8))
    failing_disk(monkeypatch, err, "tokenizer")
    with pytest.raises(WriteError, match=re.escape(atomic.DISK_ERRORS[err])):
        llmscratch.save_hf(model, tmp_path / "hf", tokenizer=tok)
    with pytest.raises(
        WriteError, match=rf"could not write {tmp_path}/tokenizer.json: {re.escape(atomic.DISK_ERRORS[err])}"
    ):
        tok.save(tmp_path / "tokenizer.json")
    assert list(tmp_path.iterdir()) == []


# ---- checkpoints that verify themselves ----------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_named_and_resume_falls_back(run, capsys):
    newest, older = ckpt_io.checkpoints(run)
    flip_a_byte(newest / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"{newest}/model.safetensors is damaged: .*SHA-256 differs"):
        llmscratch.load(run)
    assert llmscratch.load(run, verify=False).step == 4  # the size still matches: only the digest sees it
    assert main(["sample", "--checkpoint", str(run), "--max-new-tokens", "2", "--prompt", "a"]) == 2
    assert "model.safetensors is damaged" in capsys.readouterr().err
    result = llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY)
    assert f"resuming from {older.name} (step 2), the newest that verifies" in capsys.readouterr().err
    assert [h["step"] for h in result.history if h["val_loss"] is not None] == [0, 2, 4, 6]
    assert llmscratch.load(run).step == 6


def test_resume_from_the_older_checkpoint_repeats_the_run_exactly(run, tmp_path):
    """The fallback loses nothing but time: steps 2..6 from the older checkpoint give the uninterrupted run."""
    straight = llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(tmp_path / "straight"), **TINY)
    flip_a_byte(ckpt_io.checkpoints(run)[0] / "optimizer.safetensors")
    resumed = llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY)
    for name, p in straight.model.params.items():
        np.testing.assert_array_equal(
            resumed.model.bk.to_numpy(resumed.model.params[name]), straight.model.bk.to_numpy(p)
        )


def test_no_checkpoint_that_verifies_is_one_line(run):
    for ckpt in ckpt_io.checkpoints(run):
        flip_a_byte(ckpt / "state.json")
    with pytest.raises(CheckpointError, match=f"no checkpoint in {run} verifies") as e:
        llmscratch.train(max_iters=6, eval_interval=2, out_dir=str(run), resume=True, **TINY)
    assert "\n" not in str(e.value)


def test_keep_checkpoints(tmp_path):
    out = tmp_path / "run"
    llmscratch.train(max_iters=8, eval_interval=2, out_dir=str(out), keep_checkpoints=3, **TINY)
    assert [p.name[:11] for p in ckpt_io.checkpoints(out)] == ["ckpt-000008", "ckpt-000006", "ckpt-000004"]
    with pytest.raises(ConfigError, match="keep_checkpoints must be at least 1, got 0"):
        llmscratch.train(out_dir=str(tmp_path / "x"), keep_checkpoints=0, **TINY)


# ---- divergence -----------------------------------------------------------------------------------------


def test_weights_gone_nan_are_never_saved(run, monkeypatch):
    """A NaN learning rate at step 5 poisons the weights; the losses logged before the next checkpoint are
    still finite, so the save itself must refuse, naming the step, and leave step 4 in place."""
    lr = Trainer.lr
    monkeypatch.setattr(Trainer, "lr", lambda self, it: float("nan") if it == 5 else lr(self, it))
    with pytest.raises(
        TrainingDivergedError, match=r"NaN or infinite by step 6; the last good checkpoint is .*ckpt-000004"
    ):
        llmscratch.train(max_iters=8, eval_interval=2, log_interval=100, out_dir=str(run), resume=True, **TINY)
    assert llmscratch.load(run).step == 4


def test_a_nan_loss_stops_the_run_at_its_step(tmp_path, monkeypatch):
    lr = Trainer.lr
    monkeypatch.setattr(Trainer, "lr", lambda self, it: float("nan") if it == 2 else lr(self, it))
    with pytest.raises(TrainingDivergedError, match="the loss became nan at step 3"):
        llmscratch.train(max_iters=8, eval_interval=4, log_interval=1, out_dir=str(tmp_path / "run"), **TINY)
    assert llmscratch.load(tmp_path / "run").step == 0


# ---- stop signals ---------------------------------------------------------------------------------------

HANGING_RUN = """
import sys, time
import llmscratch
from llmscratch.tasks.lm import LMTask

fetch = LMTask.fetch

def hanging(self, it, micro):
    if it == 3:  # a step that never ends, as one stuck in a long native call
        print("hanging", flush=True)
        while True:
            time.sleep(3600)
    return fetch(self, it, micro)

LMTask.fetch = hanging
llmscratch.train(out_dir=sys.argv[1], max_iters=10, eval_interval=2, stop_timeout=float(sys.argv[2]), **{tiny})
"""


def hanging_run(out: Path, stop_timeout: float) -> subprocess.Popen:
    """A run that saves step 2 and then hangs inside step 3 (it prints 'hanging' when it gets there)."""
    code = HANGING_RUN.replace("{tiny}", repr(TINY))
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(out), str(stop_timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in child.stdout:
        if line.strip() == "hanging":
            return child
    raise AssertionError(child.stderr.read())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_step_that_does_not_end_is_cut_short_after_the_timeout(tmp_path):
    child = hanging_run(tmp_path / "run", stop_timeout=0.5)
    child.send_signal(signal.SIGTERM)
    err = child.communicate(timeout=300)[1]  # a safety net only: the run ends half a second after the signal
    assert child.returncode == 128 + signal.SIGTERM
    assert "SIGTERM: stopping after this step, with a checkpoint of it" in err
    assert "the step did not end within 0.5 s of the stop signal: exiting now; the last checkpoint is whole" in err
    assert llmscratch.load(tmp_path / "run").step == 2 and not list((tmp_path / "run").glob(".tmp-*"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_signal_stops_at_once(tmp_path):
    child = hanging_run(tmp_path / "run", stop_timeout=1e6)
    child.send_signal(signal.SIGTERM)
    assert any("stopping after this step" in line for line in child.stderr)  # told while the step still hangs
    child.send_signal(signal.SIGINT)
    err = child.communicate(timeout=300)[1]
    assert child.returncode == 128 + signal.SIGINT and "a second SIGINT: exiting now" in err
    assert llmscratch.load(tmp_path / "run").step == 2
