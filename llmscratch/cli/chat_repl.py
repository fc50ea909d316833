"""``llmscratch chat``: talk to a fine-tuned checkpoint, one reply streamed per line you type.

At a terminal it prompts ``you> `` and takes commands (``/help``); Ctrl-C stops a reply (the part shown
is kept in the conversation) and clears a half-typed line, Ctrl-D or /quit leaves. Piped
(``printf 'hi\\n' | llmscratch chat``) it prints one reply per input line and exits 0 at the end of input.
The conversation stays inside the model's context: the oldest turns are dropped (Checkpoint.chat).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, TextIO

from ..generation import GenerationOptions
from ..util.errors import LLMScratchError

HELP = """commands:
  /reset            forget the conversation (the system message stays)
  /system TEXT      set the system message and start over (/system alone: none)
  /temperature X    sampling temperature (0: greedy)
  /top_p X          keep the smallest set of tokens whose probability reaches X, in (0, 1]
  /help             this list
  /quit             leave (Ctrl-D does too)
Ctrl-C stops a reply; the part already shown is kept."""

SETTINGS = {"/temperature": "temperature", "/top_p": "top_p"}


class ChatSession:
    def __init__(self, ckpt: Any, options: dict[str, Any], max_new_tokens: int, system: str | None) -> None:
        ckpt.chat_tokenizer()  # a checkpoint without chat tokens fails here, before the first prompt
        self.ckpt, self.options, self.max_new_tokens = ckpt, dict(options), max_new_tokens
        self.system, self.turns = system, []

    @property
    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def command(self, line: str, out: TextIO) -> bool:
        """Run a /command; -> False when it is /quit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name == "/quit":
            return False
        if name == "/reset":
            self.turns = []
            print("(conversation cleared)", file=out)
        elif name == "/system":
            self.system, self.turns = arg or None, []
            print("(system message set; conversation cleared)", file=out)
        elif name in SETTINGS:
            try:
                value = float(arg)
                GenerationOptions.of(**{**self.options, SETTINGS[name]: value})
            except (ValueError, LLMScratchError) as e:
                print(f"error: {name} X needs a valid number ({e})", file=sys.stderr)
            else:
                self.options[SETTINGS[name]] = value
                print(f"({SETTINGS[name]} = {value})", file=out)
        elif name == "/help":
            print(HELP, file=out)
        else:
            print(f"error: unknown command {name}; /help lists them", file=sys.stderr)
        return True

    def reply(self, line: str, out: TextIO) -> None:
        """Stream the reply to ``line``; Ctrl-C stops it and keeps what was shown. The conversation gains the
        user's line and the reply together, or neither."""
        user = {"role": "user", "content": line}
        shown: list[str] = []
        try:
            for piece in self.ckpt.chat([*self.messages, user], self.max_new_tokens, stream=True, **self.options):
                shown.append(piece)
                print(piece, end="", flush=True, file=out)
        except KeyboardInterrupt:
            print(" [interrupted]", end="", file=out)
        except LLMScratchError as e:
            print(f"error: {e}", file=sys.stderr)
            return
        print(file=out, flush=True)
        self.turns += [user, {"role": "assistant", "content": "".join(shown)}]


def drop_typed_ahead(stdin: TextIO) -> None:
    """Forget what was typed but not yet read (a line entered just before a Ctrl-C), so no reply starts
    that the Ctrl-C meant to stop."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import termios

        termios.tcflush(stdin.fileno(), termios.TCIFLUSH)


def run(session: ChatSession, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """The loop: a line in, a reply out. A Ctrl-C is honoured at every moment: while typing it drops the
    line (and anything typed ahead); from Enter on it stops the reply, even before the first piece."""
    interactive = stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        print("chat: /help for commands, Ctrl-D to leave", file=out)
    line: str | None = None
    while True:  # each pass runs lines until a Ctrl-C, so the loop's own steps sit inside the handler's reach
        try:
            while True:
                line = None
                line = input("you> ") if interactive else stdin.readline()
                if not interactive and not line:
                    return 0
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                if line.startswith("/"):
                    if not session.command(line, out):
                        return 0
                    continue
                session.reply(line, out)
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            if line is None:  # while typing
                drop_typed_ahead(stdin)
                print(file=out)
            else:  # after Enter, before the reply's own handler took over
                print(" [interrupted]", file=out, flush=True)
