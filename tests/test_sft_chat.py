"""Supervised fine-tuning and chat: the template, loss masking checked by hand, --init-from, the demo data,
and `llmscratch chat` through a pipe and through a pseudo-terminal."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import flags, tiny

import llmscratch
from llmscratch import ops
from llmscratch.backends import get_backend
from llmscratch.cli import main
from llmscratch.data.batches import IGNORE
from llmscratch.models import GPT, GPTConfig
from llmscratch.tasks.sft import SFTTask
from llmscratch.tokenizers import CharTokenizer, with_chat_tokens
from llmscratch.tokenizers.chat import encode_chat, fit_conversation
from llmscratch.training.config import resolve_config
from llmscratch.training.trainer import Trainer
from llmscratch.util.errors import CheckpointError, ConfigError, DataError

TINY = tiny(block_size=32, eval_iters=1)
TINY_FLAGS = flags(**tiny(block_size=32))


def write_chat(path, conversations):
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    return path


def convo(q: str, a: str, *more: dict) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}, *more]


# ---- the template and the loss mask ----------------------------------------------------------------------


def test_template_layout_and_what_each_train_on_supervises(tmp_path):
    tok = with_chat_tokens(CharTokenizer("abc"))  # a b c = 0 1 2; system user assistant end = 3 4 5 6
    messages = [*convo("ab", "c"), {"role": "user", "content": "b"}, {"role": "assistant", "content": "ba"}]
    ids, _ = encode_chat(tok, messages)
    assert ids == [4, 0, 1, 6, 5, 2, 6, 4, 1, 6, 5, 1, 0, 6]
    data = write_chat(tmp_path / "c.jsonl", [messages, messages])
    want = {
        # position t predicts ids[t+1]; supervised: each assistant message's content and its <|end|>
        "assistant": [IGNORE] * 4 + [2, 6] + [IGNORE] * 4 + [1, 0, 6],
        "last": [IGNORE] * 10 + [1, 0, 6],
        "all": ids[1:],
    }
    for train_on, targets in want.items():
        task = SFTTask(resolve_config(task="sft", data=str(data), train_on=train_on, block_size=16), tok)
        task.prepare()
        assert task.encode(messages, 0) == (ids, targets)


def test_loss_is_the_mean_over_assistant_tokens_and_masked_positions_get_no_gradient(tmp_path):
    tok = with_chat_tokens(CharTokenizer("abc"))
    messages = convo("abca", "cb")
    data = write_chat(tmp_path / "c.jsonl", [messages, messages])
    task = SFTTask(resolve_config(task="sft", data=str(data), block_size=16), tok)
    task.prepare()
    batch = task._arrays([task.encode(messages, 0)])
    bk = get_backend("numpy", dtype="float64")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8), bk, seed=0)
    logits, loss = model.forward(**batch)
    z = bk.to_numpy(logits)[0]
    logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
    ids = [*batch["idx"][0].tolist(), tok.end_id]
    assert ids == [4, 0, 1, 2, 0, 6, 5, 2, 1, 6]  # <|user|> a b c a <|end|> <|assistant|> c b <|end|>
    supervised = [6, 7, 8]  # the positions predicting c, b and <|end|>
    by_hand = -np.mean([logp[t, ids[t + 1]] for t in supervised])
    assert abs(float(loss) - by_hand) <= 1e-12
    _, cache = ops.cross_entropy_forward(bk, logits, bk.from_numpy(batch["targets"]))
    dlogits = bk.to_numpy(ops.cross_entropy_backward(bk, 1.0, cache))[0]
    masked = [t for t in range(len(ids) - 1) if t not in supervised]
    assert np.all(dlogits[masked] == 0) and np.all(np.abs(dlogits[supervised]).sum(-1) > 0)


def test_a_step_with_every_target_masked_changes_nothing(tmp_path):
    data = write_chat(tmp_path / "c.jsonl", [convo("ab", "ba"), convo("ba", "ab"), convo("aa", "b")])
    cfg = resolve_config(task="sft", data=str(data), dtype="float64", **TINY)
    trainer = Trainer(cfg, progress=False)
    before = {n: trainer.bk.to_numpy(p).copy() for n, p in trainer.model.params.items()}
    real_batch = trainer.task.batch
    trainer.task.batch = lambda it, micro: (lambda b: {**b, "targets": np.full_like(b["targets"], IGNORE)})(
        real_batch(it, micro)
    )
    loss, tokens, _ = trainer.step(0)
    assert float(loss) == 0.0 and tokens == 0
    assert all(np.array_equal(trainer.bk.to_numpy(p), before[n]) for n, p in trainer.model.params.items())
    assert trainer.opt.t == 0  # the optimizer did not take the step either


def test_fit_conversation_drops_the_oldest_turns_but_keeps_the_system_message():
    tok = with_chat_tokens(CharTokenizer("abcdefgh "))
    system = {"role": "system", "content": "be"}
    turns = [*convo("aaaa", "bbbb"), *convo("cccc", "dddd"), {"role": "user", "content": "eeee"}]
    ids, kept = fit_conversation(tok, [system, *turns], 23)  # 4 + 6 + 6 + 6 + 1 tokens
    assert kept == [system, *turns[2:]] and len(ids) == 23
    ids, kept = fit_conversation(tok, [system, *turns], 22)
    assert kept == [system, turns[-1]] and len(ids) == 11
    ids, kept = fit_conversation(tok, [system, *turns], 1000)
    assert kept == [system, *turns]
    ids, kept = fit_conversation(tok, [{"role": "user", "content": "abcdefgh" * 4}], 10)
    assert len(ids) == 10 and ids[-1] == tok.role_id("assistant")  # alone and too long: its last tokens


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{"messages": [',
            "c.jsonl:2 is not valid JSON",
        ),
        ('{"messages": [{"role": "user", "content": "a"}]}', "c.jsonl:1: the conversation has no assistant message"),
        ('{"messages": [{"role": "robot", "content": "a"}]}', "c.jsonl:1: message 1 must be"),
        ('{"text": "a"}', "c.jsonl:1: each line must be an object with a 'messages' list"),
    ],
)
def test_bad_chat_data_is_a_one_line_error_naming_the_line(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text(line + "\n" + json.dumps({"messages": convo("a", "b")}) + "\n")
    with pytest.raises(DataError, match=message) as e:
        llmscratch.train(task="sft", data=str(path), **TINY, max_iters=1, progress=False)
    assert "\n" not in str(e.value)


# ---- init_from: pretrain, then fine-tune -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    text = d / "text.txt"
    text.write_text("ab ba abab baba aab bba\n" * 40)
    out = d / "pre"
    kwargs = dict(TINY)
    llmscratch.train(data=str(text), out_dir=str(out), max_iters=3, eval_interval=3, progress=False, **kwargs)
    return out


def test_init_from_starts_from_the_weights_with_mean_rows_for_the_chat_tokens(tmp_path, pretrained):
    data = write_chat(tmp_path / "c.jsonl", [convo("ab", "ba"), convo("ba ab", "ab ba"), convo("a", "b")])
    pre = llmscratch.load(pretrained)
    result = llmscratch.train(
        task="sft",
        init_from=str(pretrained),
        data=str(data),
        out_dir=str(tmp_path / "sft"),
        max_iters=0,
        progress=False,
        batch_size=2,
    )
    V = pre.tokenizer.vocab_size
    old, new = (m.bk.to_numpy(m.params["transformer.wte.weight"]) for m in (pre.model, result.model))
    assert new.shape == (V + 4, old.shape[1])
    assert np.array_equal(new[:V], old)
    assert np.allclose(new[V:], old.mean(axis=0), atol=1e-7)
    assert result.config.n_embd == 16 and result.config.block_size == 32  # the checkpoint's shape
    ck = llmscratch.load(tmp_path / "sft")
    assert ck.task == "sft" and ck.tokenizer.vocab_size == V + 4 and ck.state["optimizer_t"] == 0
    assert isinstance(ck.chat([{"role": "user", "content": "ab"}], 4, temperature=0), str)
    with pytest.raises(ConfigError, match="chat needs a model fine-tuned on conversations"):
        pre.chat([{"role": "user", "content": "ab"}])


def test_init_from_continues_pretraining_on_new_text(tmp_path, pretrained):
    text = tmp_path / "more.txt"
    text.write_text("baab abba\n" * 50)
    result = llmscratch.train(init_from=str(pretrained), data=str(text), max_iters=2, eval_interval=2, progress=False)
    assert result.tokenizer.to_json() == llmscratch.load(pretrained).tokenizer.to_json()
    assert result.history[-1]["step"] == 2


def test_init_from_errors(tmp_path, pretrained):
    data = write_chat(tmp_path / "c.jsonl", [convo("ab", "ba"), convo("ba", "ab")])
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*missing: the directory does not exist"):
        llmscratch.train(task="sft", init_from=str(tmp_path / "missing"), data=str(data), progress=False)
    with pytest.raises(ConfigError, match=r"the model keeps its shape; drop n_layer=3 \(it has 1\)"):
        llmscratch.train(task="sft", init_from=str(pretrained), data=str(data), n_layer=3, progress=False)
    labels = tmp_path / "l.csv"
    labels.write_text("text,label\nab,x\nba,y\naab,x\nbba,y\n")
    clf = tmp_path / "clf"
    llmscratch.train(
        task="classify",
        data=str(labels),
        out_dir=str(clf),
        max_iters=1,
        progress=False,
        **TINY,
    )
    with pytest.raises(ConfigError, match="it holds a encoder model \\(task 'classify'\\); task 'sft' trains a gpt"):
        llmscratch.train(task="sft", init_from=str(clf), data=str(data), progress=False)


# ---- llmscratch chat ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chatty(tmp_path_factory, pretrained):
    """A fine-tuned checkpoint whose replies ("abab…") go on and on: long enough to interrupt."""
    d = tmp_path_factory.mktemp("chat")
    data = write_chat(d / "c.jsonl", [convo("ab", "ab " * 30), convo("ba", "ab " * 30), convo("a", "ab " * 30)])
    out = d / "sft"
    assert (
        main(
            [
                "train",
                "--task",
                "sft",
                "--init-from",
                str(pretrained),
                "--data",
                str(data),
                "--packing",
                "--out",
                str(out),
                "--max-iters",
                "40",
                "--eval-interval",
                "40",
                "--learning-rate",
                "3e-3",
                "--quiet",
                "--sample-tokens",
                "0",
            ]
        )
        == 0
    )
    return out


def test_chat_through_a_pipe_gives_one_reply_per_line(chatty):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmscratch",
            "chat",
            "--checkpoint",
            str(chatty),
            "--max-new-tokens",
            "6",
            "--temperature",
            "0",
        ],
        input="ab\nba\n\nab ab\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    replies = run.stdout.splitlines()
    assert len(replies) == 3 and all(0 < len(r) <= 6 * 2 for r in replies)
    ck = llmscratch.load(chatty)
    assert replies[0] == ck.chat([{"role": "user", "content": "ab"}], 6, temperature=0)


def _chat_in_a_terminal(chatty):
    """`llmscratch chat` on a pseudo-terminal with a reply that never ends on its own; its first prompt read."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmscratch", "chat", "--checkpoint", str(chatty), "--max-new-tokens", "1000000", "--temperature", "0"],
        encoding="utf-8",
        timeout=60,
    )
    child.expect("you> ")
    return pexpect, child


def test_chat_in_a_terminal_streams_resets_and_survives_ctrl_c(chatty):
    reply = llmscratch.load(chatty).chat([{"role": "user", "content": "ab"}], 8, temperature=0)
    pexpect, child = _chat_in_a_terminal(chatty)
    try:
        child.sendline("ab")
        child.expect_exact("ab\r\n" + reply[:4])  # the reply itself streams (not the echo of the typed line)
        child.sendintr()  # Ctrl-C stops the reply, not the program
        child.expect(r"\[interrupted\]")
        child.expect("you> ")
        child.sendline("/reset")
        child.expect(r"\(conversation cleared\)")
        child.expect("you> ")
        child.sendline("/temperature -1")
        child.expect("error: /temperature X needs a valid number")
        child.sendline("/help")
        child.expect("/top_p X")
        child.expect("you> ")
        child.sendeof()  # Ctrl-D leaves
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)  # never leaves a replying process behind


def test_chat_honours_a_ctrl_c_that_follows_enter_at_once(chatty):
    """Enter and Ctrl-C in one write: the interrupt reaches the program before or just after it reads the
    line. Either way no reply runs on: the prompt comes back (after "[interrupted]" if the reply had begun)."""
    pexpect, child = _chat_in_a_terminal(chatty)
    try:
        for _ in range(3):
            child.send("ab\r\x03")
            child.expect("you> ")  # a reply that ran on would never give the prompt back
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)


def test_chat_demo_data(tmp_path):
    from llmscratch.data import demos

    pre, sft, test = demos.chat_dataset(tmp_path)
    assert main(["demo", "chat", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "chat_sft.jsonl").read_text() == sft.read_text()  # deterministic
    train_items = {json.loads(line)["messages"][0]["content"] for line in sft.read_text().splitlines()}
    test_rows = [json.loads(line)["messages"] for line in test.read_text().splitlines()]
    assert len(test_rows) > 100 and not any(m[0]["content"] in train_items for m in test_rows)
    assert all(demos.answer("add", (a, b)) == str(int(a) + int(b)) for a, b in [("3", "4")])
    text = pre.read_text()
    assert "<|" not in text and all(f"{m[0]['content'].split()[-1][:-1]}" in text for m in test_rows[:20])
