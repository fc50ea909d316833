"""Hugging Face tokenizer files: tokenizer.json (byte-level BPE as GPT-2 and Llama 3 use it, BERT's
WordPiece, or a character tokenizer as llmscratch writes one), a BERT vocab.txt, and GPT-2's vocab.json +
merges.txt (encoder.json + vocab.bpe).

A tokenizer.json is read only where llmscratch encodes exactly as the ``tokenizers`` library does; anything
else (another model type, a normalizer on a BPE, a prefix space) is a one-line error naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..util.errors import TokenizerError
from ..util.reading import read_json
from .base import Tokenizer, checked
from .bpe import BPETokenizer
from .char import CharTokenizer
from .chat import CHAT_TOKENS, ChatTokenizer
from .wordpiece import PREFIX, WordPieceTokenizer

# a directory's tokenizer files, in the order they are looked for
DIRECTORY_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"), ("vocab.txt",))


def _unsupported(source: str, what: str) -> TokenizerError:
    return TokenizerError(f"{source}: {what} is not supported (llmscratch reads byte-level BPE and BERT WordPiece)")


def _steps(node: dict[str, Any] | None, key: str) -> list[Any]:
    """A pre- or post-processor of tokenizer.json as a list of steps: those of a Sequence (under ``key``),
    else the one itself (None when absent)."""
    return node.get(key, []) if node and node.get("type") == "Sequence" else [node]


def _split_pattern(pre: dict[str, Any] | None, source: str) -> str:
    """The pre-tokenizer of a byte-level BPE -> its split regex: ByteLevel alone (GPT-2's pattern), or a
    Split on a regex followed by ByteLevel without one (Llama 3)."""
    steps = _steps(pre, "pretokenizers")
    if not steps or steps[-1] is None or steps[-1].get("type") != "ByteLevel":
        raise _unsupported(source, f"pre-tokenizer {pre and pre.get('type')!r} without a final ByteLevel")
    byte_level = steps[-1]
    if byte_level.get("add_prefix_space"):
        raise _unsupported(source, "ByteLevel add_prefix_space=true")
    if len(steps) == 1:
        return "gpt2" if byte_level.get("use_regex", True) else "none"
    split = steps[0]
    if len(steps) != 2 or split.get("type") != "Split" or byte_level.get("use_regex", True):
        raise _unsupported(source, f"pre-tokenizer sequence {[s.get('type') for s in steps]}")
    if split.get("behavior") != "Isolated" or split.get("invert") or "Regex" not in split.get("pattern", {}):
        raise _unsupported(source, "a Split other than an isolated regex")
    return split["pattern"]["Regex"]  # BPETokenizer names it if it is one of PATTERNS


TASK_ROLES = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]"}  # SpecialIds.after's pad, bos, eos, by BERT's names
TASK_TOKENS = tuple(TASK_ROLES.values())


def with_task_tokens(tokenizer: Tokenizer, model_vocab: int) -> tuple[Any, dict[str, tuple[str, int]]]:
    """-> tokenizer.to_huggingface() and the role -> (token, id) of its special tokens (special_token_roles).
    When the model has the 3 ids a classifier appends after the vocabulary, they are added as [PAD] [CLS] [SEP]
    with [CLS] text as the template, so that transformers' tokenizer encodes a text as llmscratch's classify
    does."""
    from tokenizers import processors

    tok, roles = tokenizer.to_huggingface(), special_token_roles(tokenizer)
    special = tokenizer.specials()
    if special.vocab_size == model_vocab and special.pad == tokenizer.vocab_size:
        tok.add_special_tokens(list(TASK_TOKENS))
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", special.bos)])
        ids = (special.pad, special.bos, special.eos)
        roles |= {role: (name, i) for (role, name), i in zip(TASK_ROLES.items(), ids, strict=True)}
    return tok, roles


def is_character_level(d: dict[str, Any]) -> bool:
    """A BPE of single characters in sorted order and no merges, nothing before it and Fuse after it: how
    CharTokenizer.to_huggingface writes a character tokenizer."""
    model, vocab = d["model"], d["model"].get("vocab", {})
    chars = sorted(vocab, key=vocab.get)
    return (
        not model.get("merges")
        and d.get("pre_tokenizer") is None
        and d.get("normalizer") is None
        and (d.get("decoder") or {}).get("type") == "Fuse"
        and all(len(c) == 1 for c in chars)
        and chars == sorted(chars)
        and not d.get("added_tokens")
    )


def _without_trailing(d: dict[str, Any], names: tuple[str, ...], source: str) -> Tokenizer | None:
    """The tokenizer d describes without the added tokens ``names``, if they are its last ids, in order (how
    llmscratch's wrappers extend a tokenizer); else None."""
    added = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
    if not all(n in added and n not in d["model"].get("vocab", {}) for n in names):
        return None
    rest = [t for t in d["added_tokens"] if t["content"] not in names]
    base = from_tokenizer_json({**d, "added_tokens": rest, "post_processor": None}, source)
    return base if [added[n] for n in names] == list(range(base.vocab_size, base.vocab_size + len(names))) else None


def template_prefix(post: dict[str, Any] | None) -> list[str]:
    """The special tokens a tokenizer.json's single-text template puts before the text ("<|begin_of_text|>
    $A": Llama 3), looking inside a Sequence of post-processors; [] when there is no template."""
    template = next((p for p in _steps(post, "processors") if p and p.get("type") == "TemplateProcessing"), None)
    prefix = []
    for piece in (template or {}).get("single", []):
        if "Sequence" in piece:
            break
        prefix.append(piece["SpecialToken"]["id"])
    return prefix


def from_tokenizer_json(d: dict[str, Any], source: str = "tokenizer.json") -> Tokenizer:
    """A parsed Hugging Face tokenizer.json -> a tokenizer of ours that encodes the same: byte-level BPE,
    WordPiece, char, any of them with the chat tokens. A classifier's [PAD] [CLS] [SEP] written after the
    vocabulary (``with_task_tokens``) are left to the task, which appends them again."""
    chat_base = _without_trailing(d, CHAT_TOKENS, source)
    if chat_base is not None:
        return ChatTokenizer(chat_base)
    task_base = _without_trailing(d, TASK_TOKENS, source)
    if task_base is not None:
        return task_base
    added = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
    model = d.get("model") or {}
    kind = model.get("type")
    if kind == "BPE" and is_character_level(d):
        return CharTokenizer(sorted(model["vocab"], key=model["vocab"].get))
    if kind == "BPE":
        if d.get("normalizer") is not None:
            raise _unsupported(source, f"a BPE with normalizer {d['normalizer'].get('type')!r}")
        for key in ("byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "dropout"):
            if model.get(key):
                raise _unsupported(source, f"BPE {key}={model[key]!r}")
        pattern = _split_pattern(d.get("pre_tokenizer"), source)
        ignore = bool(model.get("ignore_merges"))
        prefix = template_prefix(d.get("post_processor"))
        return BPETokenizer.from_vocab_merges(model["vocab"], model["merges"], pattern, added, ignore, source, prefix)
    if kind == "WordPiece":
        norm = d.get("normalizer") or {}
        if norm.get("type") != "BertNormalizer" or (d.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
            raise _unsupported(source, "a WordPiece without BertNormalizer and BertPreTokenizer")
        if model.get("continuing_subword_prefix", PREFIX) != PREFIX:
            raise _unsupported(source, f"continuing_subword_prefix {model['continuing_subword_prefix']!r}")
        vocab = model["vocab"]
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise TokenizerError(f"{source}: the WordPiece ids are not 0 .. {len(vocab) - 1}")
        return WordPieceTokenizer(
            sorted(vocab, key=vocab.get),
            lowercase=norm.get("lowercase", True),
            strip_accents=norm.get("strip_accents"),
            handle_chinese_chars=norm.get("handle_chinese_chars", True),
            clean_text=norm.get("clean_text", True),
            unk_token=model.get("unk_token", "[UNK]"),
            special_tokens=[t for t in added if t in vocab],
        )
    raise _unsupported(source, f"model type {kind!r}")


def _lowercase_setting(directory: Path) -> bool:
    """do_lower_case from a BERT directory's tokenizer_config.json (True, BertTokenizer's default, if absent)."""
    config = directory / "tokenizer_config.json"
    try:
        settings = read_json(config, TokenizerError)
    except (OSError, TokenizerError):
        return True
    return bool(settings.get("do_lower_case", True)) if isinstance(settings, dict) else True


def load_vocab_txt(path: Path) -> Tokenizer:
    """A BERT vocab.txt, lowercasing as its directory's tokenizer_config.json says."""
    return WordPieceTokenizer.from_vocab_txt(path, _lowercase_setting(path.parent))


def find_tokenizer(directory: str | Path) -> Tokenizer | None:
    """The tokenizer a directory holds: tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe, or
    vocab.txt (the first found), or a llmscratch tokenizer.json; None if it has none."""
    from . import load

    directory = Path(directory)
    for names in DIRECTORY_FILES:
        if all((directory / n).is_file() for n in names):
            if len(names) == 2:
                files = directory / names[0], directory / names[1]
                return checked(str(directory), lambda files=files: BPETokenizer.from_gpt2_files(*files))
            return load(directory / names[0])
    return None


ROLE_NAMES = {"bos": ("<|endoftext|>", "<|begin_of_text|>", "<s>", "[CLS]"), "eos": ("<|endoftext|>", "<|end_of_text|>",
              "<|eot_id|>", "</s>", "<|end|>", "[SEP]"), "unk": ("[UNK]", "<unk>"), "pad": ("[PAD]", "<pad>"),
              "cls": ("[CLS]",), "sep": ("[SEP]",), "mask": ("[MASK]",)}  # fmt: skip


def special_token_roles(tokenizer: Tokenizer) -> dict[str, tuple[str, int]]:
    """role (bos, eos, unk, pad, cls, sep, mask) -> (token, id), for the special tokens a tokenizer has."""
    specials = tokenizer.special_tokens
    roles = {}
    for role, names in ROLE_NAMES.items():
        found = next((n for n in names if n in specials), None)
        if found is not None:
            roles[role] = (found, specials[found])
    return roles
