"""What the commands share: the parser that errs in one line, checked number types, the config flags, the
checkpoint and generation flags."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, NoReturn, get_args, get_type_hints

from ..training.config import FIELDS, TrainConfig

# flags whose name differs from the config field
FLAG_NAMES = {"out_dir": "--out"}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``llmscratch <command>: error: ...``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def number(kind: type, low: float = 1, above: bool = False, below: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` (int or float) of at least ``low`` (more than ``low`` with ``above``),
    and less than ``below`` if given."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {'more than' if above else 'at least'} {low:g}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be less than {below:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def number_list(kind: type = int, low: float = 1) -> Callable[[str], list[Any]]:
    """An argparse type: comma-separated numbers, each as ``number`` checks it ("64,256,1024")."""
    one = number(kind, low)

    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("needs at least one value, comma-separated (e.g. 64,256)")
        return [one(t) for t in items]

    parse.__name__ = "list"
    return parse


COUNT = number(int)  # 1, 2, ...
POSITIVE = number(float, 0, above=True)  # any number > 0
FRACTION = number(float, 0, above=True, below=1)  # 0 < x < 1


def _flag_type(hint: Any) -> Any:
    """int | None -> int, etc.; bool stays bool."""
    return next((t for t in (get_args(hint) or (hint,)) if t is not type(None)), str)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One --kebab-case flag per TrainConfig field (booleans also take --no-...); the config checks the values."""
    hints = get_type_hints(TrainConfig)
    group = parser.add_argument_group("config (any TrainConfig field; default in brackets)")
    for name, f in FIELDS.items():
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        kind = _flag_type(hints[name])
        default = None if f.default is MISSING else f.default
        if kind is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=f"[{default}]"
            )
        else:
            group.add_argument(
                flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(), help=f"[{default}]"
            )


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="out",
        help="a training --out directory, a checkpoint directory or a Hugging Face model directory",
    )
    p.add_argument("--backend", default=None, help="run on another backend than the one it was trained on")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the SHA-256 of each checkpoint file (sizes are still checked): faster for very large models",
    )


def add_quantize_args(p: argparse.ArgumentParser) -> None:
    """--quantize and --quantize-group: the model's linear layers in int8 or int4 once loaded."""
    from ..ops.quantize import FORMATS

    p.add_argument(
        "--quantize", choices=list(FORMATS), help="weight-only quantization of the linear layers (inference only)"
    )
    p.add_argument(
        "--quantize-group", type=number(int, 1), help="int4: inputs per scale [32]; int8: one scale per output channel"
    )


def add_generation_args(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """One flag per generation option (--top-p, --num-beams, ...), its help from GenerationOptions. A flag
    not given is left out, so the command's own defaults (shown in the help) apply."""
    from ..generation import GenerationOptions

    kinds = {"int": int, "float": float}
    for f in fields(GenerationOptions):
        flag, default = "--" + f.name.replace("_", "-"), defaults.get(f.name, f.default)
        shown = f" [{default}]" if default not in (None, ()) else ""
        if f.name == "stop_strings":
            p.add_argument(flag, nargs="+", metavar="TEXT", help=f.metadata["help"])
        elif f.name == "eos_token_id":
            p.add_argument(flag, nargs="+", type=int, metavar="ID", help=f.metadata["help"])
        elif f.name == "early_stopping":
            p.add_argument(flag, choices=["true", "false", "never"], help=f.metadata["help"] + shown)
        else:
            kind = kinds[str(f.type).split("|")[0].strip()]
            p.add_argument(flag, type=kind, help=f.metadata["help"] + shown)


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generation flags that were given (or have a command default), as keyword options."""
    from ..generation import GenerationOptions

    return {f.name: getattr(args, f.name) for f in fields(GenerationOptions) if getattr(args, f.name) is not None}


def texts_or_stdin(texts: list[str]) -> list[str]:
    """The TEXT arguments, else the lines of standard input (blank lines skipped)."""
    return texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
