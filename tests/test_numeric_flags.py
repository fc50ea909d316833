"""Every numeric flag of every command, given zero, a negative, NaN, infinities and absurdly large values:
each is either refused in one line (status 2, no traceback) or accepted because it means something. The
same for the Python API: every numeric field of ``train()``'s config, and every numeric generation option of
``sample()``, given those values and values of the wrong type.

The walk reads the parser itself, so a flag added later is walked too. What "accepted" is checked against
depends on the command: ``train``'s values must make a valid TrainConfig whose memory the machine has (the
checks a run makes before it starts); the generation flags must make valid GenerationOptions; ``attention``
runs for real on a tiny checkpoint; the rest are checked by their parsers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
from conftest import tiny

import llmscratch
from llmscratch.cli import build_parser, main
from llmscratch.cli.args import generation_options
from llmscratch.data.prepare import check_workers
from llmscratch.generation import GenerationOptions
from llmscratch.training.config import FIELDS, resolve_config
from llmscratch.util.errors import LLMScratchError

VALUES = ["0", "-1", "nan", "inf", "-inf", "1e30", "9" * 40]
NUMERIC = {"int", "float", "list"}  # argparse types by name: int, float, and llmscratch.cli.args' checked ones


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command and subcommand ('bench attention', ...) -> its parser."""
    found = {}

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and prefix:
            found[" ".join(prefix)] = parser
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, (*prefix, name))

    walk(build_parser(), ())
    return found


def numeric_flags() -> list[tuple[str, str]]:
    return [
        (command, action.option_strings[-1])
        for command, parser in commands().items()
        for action in parser._actions
        if action.option_strings and getattr(action.type, "__name__", None) in NUMERIC
    ]


def test_the_walk_finds_the_commands_and_their_flags():
    found = commands()
    for command in ("train", "sample", "chat", "classify", "translate", "eval", "attention", "bench attention"):
        assert command in found
    flags = numeric_flags()
    assert ("train", "--learning-rate") in flags and ("sample", "--top-p") in flags and len(flags) > 60


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("run") / "run"
    llmscratch.train(max_iters=1, eval_interval=1, out_dir=str(out), **tiny(progress=False))
    return str(out)


REQUIRED = {  # what each command needs besides the flag under test
    "sample": ["--checkpoint", "{ckpt}"],
    "chat": ["--checkpoint", "{ckpt}"],
    "classify": ["--checkpoint", "{ckpt}"],
    "translate": ["--checkpoint", "{ckpt}"],
    "eval": ["--checkpoint", "{ckpt}", "--data", "x"],
    "attention": ["--checkpoint", "{ckpt}", "--text", "ab"],
    "tokenizer train": ["--vocab-size", "300", "--out", "x"],
    "prepare": ["--data", "x", "--tokenizer", "t", "--out", "o"],
    "convert": ["{ckpt}", "x", "--to", "llmscratch"],
}


def accepted(command: str, args: argparse.Namespace, argv: list[str]) -> None:
    """Raises the library's error if the parsed values are refused where the command would refuse them."""
    if command in ("train", "tune"):  # the config flags
        overrides = {name: getattr(args, name) for name in FIELDS}
        cfg = resolve_config(preset=args.preset, config_file=args.config, **overrides)
        from llmscratch.backends import get_backend
        from llmscratch.models import ModelConfig
        from llmscratch.training.memory import check_training_memory, estimate_training_memory

        model = ModelConfig(
            kind=cfg.kind,
            vocab_size=100,
            **({"n_classes": 2} if cfg.kind == "encoder" else {}),
            **({"src_vocab_size": 100} if cfg.kind == "seq2seq" else {}),
            **cfg.architecture(),
        )
        bk = get_backend(cfg.backend, cfg.device, cfg.dtype)
        check_training_memory(estimate_training_memory(model, cfg.batch_size, 1, bk, False), bk, "")
    elif hasattr(args, "top_p"):  # a command with the generation flags
        GenerationOptions.of(**generation_options(args))
    elif hasattr(args, "workers"):  # prepare, tokenizer train, bench data: processes to start
        for workers in args.workers if isinstance(args.workers, list) else [args.workers]:
            check_workers(workers)
    if command == "attention":
        assert main(argv) in (0, 2)


@pytest.mark.parametrize("command, flag", numeric_flags(), ids=lambda v: v.replace(" ", "-"))
def test_a_numeric_flag_is_refused_in_one_line_or_accepted(command, flag, checkpoint, tmp_path, capsys):
    for value in VALUES:
        argv = [*command.split(), *(a.format(ckpt=checkpoint) for a in REQUIRED.get(command, [])), f"{flag}={value}"]
        if command == "attention":
            argv += ["--out", str(tmp_path / "a.png")]
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as stop:
            err = capsys.readouterr().err
            assert stop.code == 2 and err.count("\n") == 1 and flag in err, (value, err)
            continue
        try:
            accepted(command, args, argv)
        except LLMScratchError as e:
            assert "\n" not in str(e), (value, e)
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") <= 1, (value, err)


# ---- the Python API ---------------------------------------------------------------------------------------

PY_VALUES = [0, -1, 0.5, math.nan, math.inf, -math.inf, 1e30, 10**40, True, "3", [1]]


def numeric_fields(cls: type) -> list[str]:
    """The fields of a dataclass whose annotation names int or float."""
    return [f.name for f in dataclasses.fields(cls) if any(t in str(f.type) for t in ("int", "float"))]


@pytest.mark.parametrize("name", numeric_fields(llmscratch.TrainConfig))
def test_a_numeric_train_argument_is_refused_in_one_line_or_accepted(name):
    """``train(name=value)``: the config is made, or refused in one line, before anything runs; an accepted
    one must also pass the memory check a run makes first."""
    from llmscratch.backends import get_backend
    from llmscratch.models import ModelConfig
    from llmscratch.training.memory import check_training_memory, estimate_training_memory

    for value in PY_VALUES:
        try:
            cfg = resolve_config(**{name: value})
            sizes = {"encoder": {"n_classes": 2}, "seq2seq": {"src_vocab_size": 100}}.get(cfg.kind, {})
            model = ModelConfig(kind=cfg.kind, vocab_size=100, **sizes, **cfg.architecture())
            bk = get_backend(cfg.backend, cfg.device, cfg.dtype)
            check_training_memory(estimate_training_memory(model, cfg.batch_size, 1, bk, False), bk, "")
        except LLMScratchError as e:
            assert "\n" not in str(e), (value, e)  # naming name, or the field it must agree with


@pytest.mark.parametrize("name", numeric_fields(GenerationOptions))
def test_a_numeric_generation_option_is_refused_in_one_line_or_generates(name, checkpoint):
    """``sample(prompt, name=value)`` on a tiny checkpoint: text, or one line naming the option."""
    ck = llmscratch.load(checkpoint)
    for value in PY_VALUES:
        try:
            text = ck.sample("ab", max_new_tokens=3, **{name: value})
        except LLMScratchError as e:
            assert "\n" not in str(e) and name in str(e), (value, e)
        else:
            assert isinstance(text, str) and text.startswith("ab"), (value, text)
