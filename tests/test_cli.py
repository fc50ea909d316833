"""The command line, as a user meets it: train, sample, errors, Ctrl-C, --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import flags, tiny

import llmscratch
from llmscratch.cli import main

TINY = flags(**tiny(eval_iters=2), quiet=True)


def test_train_then_sample_on_the_default_corpus(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        main(["train", *TINY, "--max-iters", "6", "--eval-interval", "3", "--out", out, "--sample-tokens", "20"]) == 0
    )
    printed = capsys.readouterr().out
    assert "step 6: train loss" in printed and "---- sample ----" in printed
    assert llmscratch.load(out).step == 6
    assert main(["sample", "--checkpoint", out, "--prompt", "import ", "--max-new-tokens", "15", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("import ")


def test_console_script_on_shakespeare(tmp_path, shakespeare):
    """The installed `llmscratch` entry point, as the README uses it."""
    out = str(tmp_path / "sh")
    run = subprocess.run(
        [
            "llmscratch",
            "train",
            "--data",
            "shakespeare",
            *TINY,
            "--max-iters",
            "4",
            "--eval-interval",
            "2",
            "--out",
            out,
            "--sample-tokens",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [
            "llmscratch",
            "sample",
            "--checkpoint",
            out,
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "20",
            "--temperature",
            "0.8",
            "--top-k",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.startswith("ROMEO:")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--preset", "shakespeare_cpu"],
            "unknown preset 'shakespeare_cpu' (did you mean 'shakespeare_char_cpu'?)",
        ),
        (["train", "--backend", "mxnet"], "unknown backend 'mxnet'"),
        (["train", "--mlp", "gelu2"], "unknown mlp 'gelu2' (did you mean 'gelu'?)"),
        (["train", "--resume", "--out", "/nonexistent/run"], "cannot resume: no checkpoint in /nonexistent/run"),
        (["sample", "--checkpoint", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
        (["train", "--data", "/nonexistent.txt"], "no corpus named '/nonexistent.txt'"),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attention", "--T", "0"], "argument --T: must be at least 1, got 0"),
        (["attention", "--T", "16,x"], "argument --T: 'x' is not an integer"),
        (["attention", "--budget", "-1"], "argument --budget: must be more than 0, got -1"),
        (["attention", "--backend", "numpy", "--kernels", "nope"], "unknown kernel 'nope'; choose from naive"),
        (["train", "--backend", "nope"], "unknown backend 'nope'"),
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["ops", "--dtype", "float8"], "invalid choice: 'float8'"),
        (["tasks", "--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
        (["dist", "--backend", "nope"], "unknown backend 'nope'"),
        (["generate", "--new-tokens", "0"], "argument --new-tokens: must be at least 1, got 0"),
        (["tokenizer", "--data", "/nonexistent.txt"], "no corpus named '/nonexistent.txt'"),
        (["nope"], "invalid choice: 'nope'"),
    ],
)
def test_bench_errors_are_one_line_with_status_2_and_write_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "results"
    try:
        status = main(["bench", *argv, "--out", str(out)])
    except SystemExit as stop:  # argparse's errors exit from inside the parser
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_prompt_outside_the_vocabulary(tmp_path, capsys):
    out = str(tmp_path / "run")
    main(["train", *TINY, "--max-iters", "1", "--eval-interval", "1", "--out", out, "--sample-tokens", "0"])
    capsys.readouterr()
    assert main(["sample", "--checkpoint", out, "--prompt", "naïve"]) == 2
    assert "character 'ï' (at position 2) is not in the" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path):
    out = str(tmp_path / "run")
    cmd = [
        sys.executable,
        "-m",
        "llmscratch.cli",
        "train",
        *flags(**tiny(eval_iters=2)),
        "--max-iters",
        "100000",
        "--eval-interval",
        "1000",
        "--log-interval",
        "1",
        "--out",
        out,
        "--sample-tokens",
        "0",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(out, "LATEST")) and time.time() < deadline:  # the step-0 checkpoint
        time.sleep(0.1)
    time.sleep(1.0)  # train some steps past it
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: saved step" in stderr + stdout
    step = llmscratch.load(out).step
    assert step > 0
    assert (
        main(["train", "--resume", "--out", out, "--max-iters", str(step + 2), "--quiet", "--sample-tokens", "0"]) == 0
    )
    assert llmscratch.load(out).step == step + 2
