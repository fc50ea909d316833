"""Every shell and Python snippet of the README and of docs/ runs, so the documentation cannot drift from the code.

A page's snippets run in order in one fresh folder, so a later snippet finds what an earlier one made (a
checkpoint, a demo file): ```bash blocks under ``bash -euo pipefail``, ```python blocks each in its own
interpreter. Training runs on tiny sizes: ``llmscratch train`` (and ``torchrun ... -m llmscratch train``, and
``llmscratch.train()`` in Python) gets a few steps on small batches appended, which win over the snippet's own
values (a flag given later wins), and each ``llmscratch bench`` suite its smallest settings, writing into the
folder. What a page uses that would come from the network is made here: tinyshakespeare and names through the
library's own lookup (the page is skipped, with the reason, when they cannot be had), and a small random GPT-2
and BERT in Hugging Face's layout as ``gpt2`` and ``bert-dir``. ``pip install`` does nothing (the packages are
installed). A block right after a ``<!-- not run: why -->`` line is not run, for the reason given (the test
command itself, a server, a second machine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?P<skip><!-- not run: (?P<why>[^>]+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S)
RUN = ("bash", "python")

TINY_TRAIN = "--max-iters 2 --eval-iters 1 --eval-interval 2 --batch-size 2 --sample-tokens 8"
TINY_BENCH = {
    "train": "--rounds 1 --steps 1 --max-iters 2",
    "attention": "--T 16,32 --budget 0.01",
    "ops": "--rounds 1",
    "tasks": "--rounds 1 --max-iters 2",
    "lora": "--rounds 1 --steps 1",
    "dist": "--rounds 1 --max-iters 4",
    "generate": "--rounds 1 --new-tokens 4 --beams 2",
    "tokenizer": "--vocab-sizes 260,270 --wordpiece-sizes 120",
    "data": "--prepare-mb 0.3 --vocab-size 300 --workers 1 --iters 2 --train-mb 0.3 --train-vocab 300",
}
BASH_PREAMBLE = f"""
llmscratch() {{
    case "$1" in
        train) "$PYTHON" -m llmscratch "$@" {TINY_TRAIN} ;;
        bench) "$PYTHON" -m llmscratch "$@" $(bench_tiny "$2") --out bench ;;
        *) "$PYTHON" -m llmscratch "$@" ;;
    esac
}}
bench_tiny() {{
    case "$1" in
{"".join(f"        {suite}) echo '{flags}' ;;{chr(10)}" for suite, flags in TINY_BENCH.items())}    esac
}}
torchrun() {{ "$PYTHON" -m torch.distributed.run "$@" {TINY_TRAIN}; }}
python() {{ "$PYTHON" "$@"; }}
pip() {{ :; }}
"""
PYTHON_PREAMBLE = """
import llmscratch

_train = llmscratch.train


def _tiny_train(*args, **kwargs):
    return _train(*args, **{**kwargs, "max_iters": 2, "eval_iters": 1, "eval_interval": 2, "batch_size": 2})


llmscratch.train = _tiny_train
"""


def snippets(page: Path) -> list[tuple[str, str, str | None]]:
    """(language, code, why it is not run or None) for each ```bash and ```python block of the page."""
    text = page.read_text(encoding="utf-8")
    return [(m["lang"], m["code"], m["why"]) for m in FENCE.finditer(text) if m["lang"] in RUN]


def test_every_page_has_snippets_and_few_are_not_run():
    """The pages are found, and a block that is not run is the exception: each says why."""
    assert len(PAGES) >= 13
    found = [s for page in PAGES for s in snippets(page)]
    not_run = [why for _, _, why in found if why]
    assert len(found) >= 30 and len(not_run) <= 5, not_run


LINK = re.compile(r"\]\((?!https?://)([^)#\s]+)")


def test_every_relative_link_points_at_a_file():
    broken = [
        (page.name, target)
        for page in PAGES
        for target in LINK.findall(page.read_text(encoding="utf-8"))
        if not (page.parent / target).exists()
    ]
    assert not broken


def hugging_face_models(folder: Path, text: str) -> None:
    """A small random GPT-2 (as ``gpt2``) and BERT (as ``bert-dir``), each with a tokenizer of its own kind."""
    transformers = pytest.importorskip("transformers")
    from llmscratch.tokenizers import BPETokenizer, WordPieceTokenizer

    bpe = BPETokenizer.train(text[:50_000], vocab_size=300, pattern="gpt2")
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=bpe.vocab_size, n_positions=256, n_embd=32, n_layer=2, n_head=2)
    )
    gpt2.save_pretrained(folder / "gpt2")
    bpe.to_huggingface().save(str(folder / "gpt2" / "tokenizer.json"))
    wordpiece = WordPieceTokenizer.train(text[:50_000], vocab_size=200)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = transformers.BertConfig(vocab_size=wordpiece.vocab_size, **sizes)
    transformers.BertModel(config).save_pretrained(folder / "bert-dir")
    wordpiece.save_vocab_txt(folder / "bert-dir" / "vocab.txt")


WITH_SNIPPETS = [page for page in PAGES if snippets(page)]  # an index page or a prose-only page has none


@pytest.mark.parametrize("page", WITH_SNIPPETS, ids=[str(p.relative_to(ROOT)) for p in WITH_SNIPPETS])
def test_the_snippets_of_a_page_run(page, tmp_path):
    found = snippets(page)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("shakespeare", "names"):
        (data / f"{'tinyshakespeare' if name == 'shakespeare' else name}.txt").write_text(corpus(name))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    if any(name in code for _, code, _ in found for name in ("gpt2", "bert-dir")):
        hugging_face_models(work, (data / "tinyshakespeare.txt").read_text())
    env = os.environ | {
        "LLMSCRATCH_DATA_DIR": str(data),
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    for i, (lang, code, why) in enumerate(found):
        if why:
            continue
        if lang == "bash":
            command = ["bash", "-euo", "pipefail", "-c", BASH_PREAMBLE + code]
        else:
            script = work / f"snippet_{i}.py"
            script.write_text(PYTHON_PREAMBLE + code, encoding="utf-8")
            command = [sys.executable, str(script)]
        run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, f"{page.name}, snippet {i + 1} ({lang}):\n{code}\n{run.stderr[-3000:]}"
