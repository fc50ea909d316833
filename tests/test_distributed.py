"""Data-parallel training under torchrun (gloo, 2 processes on this machine's CPU): the same numbers as one
process, checkpoints that resume across process counts, one writer, clean stops on SIGTERM, a dead rank ending
the run, and the bad inputs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import flags, rel_err, tiny

import llmscratch
from llmscratch.util.errors import ConfigError

torch = pytest.importorskip("torch")

TINY = tiny(eval_iters=2, log_interval=5, warmup_iters=2)
ENV = os.environ | {"OMP_NUM_THREADS": "1", "LLMSCRATCH_DIST_TIMEOUT": "20"}


def torchrun(n: int, *args: str, wait: bool = True, timeout: float = 240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def train_args(out: Path, *extra: str, **values) -> list[str]:
    """``-m llmscratch train`` quietly into out with these config values (and extra flags)."""
    return ["-m", "llmscratch", "train", "--quiet", "--sample-tokens", "0", "--out", str(out), *extra, *flags(**values)]


def train_cli(n: int, out: Path, **values):
    run = torchrun(n, *train_args(out, **values))
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def params(out: Path) -> dict[str, np.ndarray]:
    ck = llmscratch.load(out, backend="numpy", dtype="float64")
    return {n: ck.model.bk.to_numpy(p) for n, p in ck.model.params.items()}


def losses(out: Path) -> list[float]:
    ck = llmscratch.load(out)
    return [h["train_loss"] for h in ck.state["history"] if h["train_loss"] is not None]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-12)])
def test_two_processes_train_as_one(tmp_path, backend, dtype, tol):
    """gradient_accumulation_steps=4 split 2 + 2: the same global batch, summed in another order."""
    values = dict(TINY, backend=backend, dtype=dtype, gradient_accumulation_steps=4, max_iters=20, eval_interval=10)
    train_cli(2, tmp_path / "two", **values)
    one = llmscratch.train(out_dir=str(tmp_path / "one"), progress=False, **values)
    two_losses, one_losses = losses(tmp_path / "two"), [h["train_loss"] for h in one.history if h["train_loss"]]
    assert len(two_losses) == len(one_losses) == 20
    np.testing.assert_allclose(two_losses, one_losses, rtol=tol, atol=0)
    ref = params(tmp_path / "one")
    for name, p in params(tmp_path / "two").items():
        assert rel_err(p, ref[name]) <= 10 * tol, name
    ck = llmscratch.load(tmp_path / "two")
    kept = sorted(p.name for p in (tmp_path / "two").iterdir() if p.name.startswith("ckpt-"))
    assert [name[:11] for name in kept] == ["ckpt-000010", "ckpt-000020"], kept  # rank 0 alone writes
    assert kept[-1] == ck.path.name
    assert all(h.get("allreduce_ms", 0) >= 0 for h in ck.state["history"])


@pytest.mark.parametrize("task", ["dpo", "rl"])
def test_two_processes_fine_tune_lora_adapters_as_one(tmp_path, task):
    """LoRA with DPO (its reference: the adapters off) and with RL (each rank samples its micro-batches' replies
    from the same model): 2 processes give the 1-process numbers, float64."""
    from test_dpo import write_preferences
    from test_rl import write_prompts

    (tmp_path / "t.txt").write_text("".join(f"{a}+{b}={a + b}.\n" for a in range(10) for b in range(10)) * 3)
    base = tmp_path / "base"
    llmscratch.train(data=str(tmp_path / "t.txt"), out_dir=str(base), max_iters=4, progress=False, **TINY)
    data = write_preferences(tmp_path / "p.jsonl") if task == "dpo" else write_prompts(tmp_path / "p.jsonl")
    values = dict(
        TINY,
        task=task,
        data=str(data),
        init_from=str(base),
        dtype="float64",
        lora_rank=2,
        gradient_accumulation_steps=2,
        max_iters=6,
        eval_interval=6,
        learning_rate=1e-2,
    )
    if task == "rl":
        values |= dict(reward="number", rl_max_new_tokens=3)
    train_cli(2, tmp_path / "two", **values)
    llmscratch.train(out_dir=str(tmp_path / "one"), progress=False, **values)
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-10, atol=1e-12)
    ref = params(tmp_path / "one")
    for name, p in params(tmp_path / "two").items():
        assert rel_err(p, ref[name]) <= 1e-10, name


def test_checkpoints_resume_across_process_counts(tmp_path):
    values = dict(TINY, dtype="float64", gradient_accumulation_steps=2, eval_interval=5)
    whole = llmscratch.train(max_iters=10, out_dir=str(tmp_path / "whole"), progress=False, **values)
    train_cli(2, tmp_path / "a", max_iters=5, **values)  # 2 processes, then 1
    llmscratch.train(max_iters=10, out_dir=str(tmp_path / "a"), resume=True, progress=False, **values)
    llmscratch.train(max_iters=5, out_dir=str(tmp_path / "b"), progress=False, **values)  # 1, then 2
    run = torchrun(2, *train_args(tmp_path / "b", "--resume", max_iters=10, **values))
    assert run.returncode == 0, run.stderr[-3000:]
    ref = {n: whole.model.bk.to_numpy(p) for n, p in whole.model.params.items()}
    for out in ("a", "b"):
        np.testing.assert_allclose(
            losses(tmp_path / out), [h["train_loss"] for h in whole.history if h["train_loss"]], rtol=1e-12
        )
        for name, p in params(tmp_path / out).items():
            assert rel_err(p, ref[name]) <= 1e-12, (out, name)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


def wait_for(proc, predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_sigterm_on_one_rank_stops_every_rank_after_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    values = dict(TINY, dtype="float64", gradient_accumulation_steps=2, max_iters=100_000, eval_interval=100_000)
    proc = torchrun(
        2,
        *train_args(out, **values),
        wait=False,
    )
    wait_for(proc, lambda: (out / "LATEST").exists())  # the step-0 checkpoint: training has started
    wait_for(proc, lambda: len(children(proc.pid)) == 2)
    time.sleep(1.0)
    os.kill(children(proc.pid)[1], signal.SIGTERM)  # rank 1 (or 0): a scheduler preempting one process
    proc.communicate(timeout=60)
    ck = llmscratch.load(out)
    stopped = ck.step
    assert stopped > 0
    more = values | {"max_iters": stopped + 4}
    resumed = llmscratch.train(out_dir=str(out), resume=True, progress=False, **more)
    whole = llmscratch.train(progress=False, **more)
    for name, p in resumed.model.params.items():
        assert rel_err(resumed.model.bk.to_numpy(p), whole.model.bk.to_numpy(whole.model.params[name])) <= 1e-12


def test_sigterm_stops_a_single_process_after_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, *train_args(out, **TINY, max_iters=100_000, eval_interval=100_000)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(proc, lambda: (out / "LATEST").exists())
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted: saved step" in stdout + stderr
    assert llmscratch.load(out).step > 0


HANGING_RANK = """
import os, sys, time
import llmscratch
from llmscratch.tasks.lm import LMTask

fetch = LMTask.fetch

def hanging(self, it, micro):
    if it == 3 and os.environ["RANK"] == "1":  # rank 1 stuck in a long native call; rank 0 waits on it
        print("hanging", flush=True)
        while True:
            time.sleep(3600)
    return fetch(self, it, micro)

LMTask.fetch = hanging
os.environ["LLMSCRATCH_DIST_TIMEOUT"] = "3600"  # the stop timeout, not the collective's, ends rank 0
llmscratch.train(out_dir=sys.argv[1], max_iters=10, eval_interval=2, stop_timeout=1.0, **{tiny})
"""


def test_a_step_that_does_not_end_on_one_rank_is_cut_short_on_every_rank(tmp_path):
    """SIGTERM to torchrun reaches both ranks: one hangs inside its step, the other inside the all-reduce
    that waits for it; each ends stop_timeout after the signal, and step 2's checkpoint is whole."""
    out, script = tmp_path / "run", tmp_path / "hanging_rank.py"
    script.write_text(HANGING_RANK.replace("{tiny}", repr(dict(TINY, gradient_accumulation_steps=2))))
    proc = torchrun(2, str(script), str(out), wait=False)
    for line in proc.stdout:
        if line.strip() == "hanging":
            break
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]  # a safety net only
    assert proc.returncode != 0
    assert err.count("SIGTERM: stopping after this step") == 2, err[-3000:]
    assert err.count("the step did not end within 1 s of the stop signal: exiting now") == 2, err[-3000:]
    assert llmscratch.load(out).step == 2 and not list(out.glob(".tmp-*"))


def test_a_killed_rank_ends_the_run_with_an_error(tmp_path):
    out = tmp_path / "run"
    proc = torchrun(
        2,
        *train_args(out, **TINY, gradient_accumulation_steps=2, max_iters=100_000, eval_interval=100_000),
        wait=False,
    )
    wait_for(proc, lambda: (out / "LATEST").exists())
    wait_for(proc, lambda: len(children(proc.pid)) == 2)
    os.kill(children(proc.pid)[1], signal.SIGKILL)
    proc.communicate(timeout=300)  # a safety net only: the survivor's collective times out after 20 s
    assert proc.returncode != 0


def test_world_size_must_divide_the_accumulation_steps(tmp_path):
    run = torchrun(2, *train_args(tmp_path / "r", **TINY, gradient_accumulation_steps=3, max_iters=2))
    assert run.returncode != 0
    assert (
        "gradient_accumulation_steps (3) counts the micro-batches of a whole step and must be a multiple of the "
        "number of processes (2)" in run.stderr
    )


def test_cupy_with_gloo_is_refused():
    with pytest.raises(
        ConfigError, match="cupy on the GPU with dist_backend='gloo': gloo reduces host memory; use 'nccl'"
    ):
        llmscratch.train(backend="cupy", dist_backend="gloo", max_iters=1, progress=False)


def test_different_configs_on_different_ranks_stop_every_rank(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, llmscratch
        lr = 1e-3 * (1 + int(os.environ["RANK"]))  # a rank that read another config
        llmscratch.train(learning_rate=lr, max_iters=2, gradient_accumulation_steps=2, progress=False, **{TINY!r})
    """)
    )
    run = torchrun(2, str(script))
    assert run.returncode != 0
    assert run.stderr.count("the ranks of this run hold different configs, tokenizers or weights") == 2


def test_rank_0_alone_writes_checkpoints(tmp_path):
    script = tmp_path / "script.py"
    log = tmp_path / "writers.txt"
    script.write_text(
        textwrap.dedent(f"""
        import os, llmscratch
        from llmscratch.training import checkpoint
        real = checkpoint.save_checkpoint
        def recording(*args, **kwargs):
            with open({str(log)!r}, "a") as f:
                f.write(os.environ["RANK"] + "\\n")
            return real(*args, **kwargs)
        checkpoint.save_checkpoint = recording
        llmscratch.train(max_iters=4, eval_interval=2, gradient_accumulation_steps=2, out_dir={str(tmp_path / "o")!r},
                         progress=False, **{TINY!r})
    """)
    )
    run = torchrun(2, str(script))
    assert run.returncode == 0, run.stderr[-3000:]
    assert log.read_text().split() == ["0", "0", "0"]  # steps 0, 2 and 4, all by rank 0


LEAK_CHECK = """
import json, threading
import torch.distributed as dist
import llmscratch
llmscratch.train(max_iters=2, eval_interval=1, out_dir={out!r}, tensorboard=True, progress=False, **{tiny!r})
left = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon)
print(json.dumps({{"threads": left, "process_group": dist.is_initialized()}}))
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_train_from_a_script_leaves_nothing_running(tmp_path, processes):
    """llmscratch.train() in a script (alone, or on each rank under torchrun) closes what it opened: its
    TensorBoard writer and its process group; the interpreter then exits by itself. (The timeout only guards
    against a hang.)"""
    pytest.importorskip("tensorboard")
    script = tmp_path / "script.py"
    script.write_text(LEAK_CHECK.format(out=str(tmp_path / "out"), tiny=TINY | {"gradient_accumulation_steps": 2}))
    if processes == 1:
        run = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=240)
    else:
        run = torchrun(processes, str(script))
    assert run.returncode == 0, run.stderr[-3000:]
    # the ranks share one stdout, where their lines may run together: each report is found by itself
    reports = [json.loads(m) for m in re.findall(r'\{"threads".*?\}', run.stdout)]
    assert reports == [{"threads": [], "process_group": False}] * processes
    assert list((tmp_path / "out" / "tensorboard").iterdir())  # the writer was opened, and closed
