"""llmscratch.viz and the `plot` / `attention` commands: the numbers drawn (attention rows sum to 1, the causal
upper triangle is 0, heads × T × S, the history's values), PNGs that are non-empty and the same bytes for the
same drawing, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny

import llmscratch
from llmscratch.cli import main
from llmscratch.training.checkpoint import convert
from llmscratch.training.metrics_log import read_metrics
from llmscratch.util.errors import ConfigError, DataError
from llmscratch.viz import attention_heads, attention_heatmap, attention_of_text, token_labels, training_curves

pytest.importorskip("matplotlib")

TINY = tiny(n_layer=2, eval_iters=2, progress=False)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt")
    llmscratch.train(max_iters=20, eval_interval=10, out_dir=str(out), **TINY)
    return out


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    rows = ["text,label"] + [f"{w} film {w},{lab}" for w, lab in [("good", "pos"), ("bad", "neg")] * 20]
    (out / "data.csv").write_text("\n".join(rows) + "\n")
    llmscratch.train(
        task="classify", data=str(out / "data.csv"), max_iters=4, eval_interval=4, out_dir=str(out / "run"), **TINY
    )
    return out / "run"


@pytest.fixture(scope="module")
def translator_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mt")
    words = ["one", "two", "three", "four", "five"]
    french = ["un", "deux", "trois", "quatre", "cinq"]
    pairs = [f"{words[i]} {words[j]}\t{french[i]} {french[j]}" for i in range(5) for j in range(5)]
    (out / "pairs.tsv").write_text("\n".join(pairs) + "\n")
    llmscratch.train(
        task="seq2seq", data=str(out / "pairs.tsv"), max_iters=4, eval_interval=4, out_dir=str(out / "run"), **TINY
    )
    return out / "run"


def test_gpt_attention_of_a_text_is_causal_and_sums_to_one(gpt_run):
    attention = attention_of_text(llmscratch.load(gpt_run), "def f(x):")
    assert list(attention.maps) == ["transformer.h.0.attn", "transformer.h.1.attn"]
    assert attention.layers() == attention.layers("decoder") == list(attention.maps)
    assert attention.tokens == ["d", "e", "f", "␣", "f", "(", "x", ")", ":"] and attention.target is None
    for name, probs in attention.maps.items():
        assert probs.shape == (2, 9, 9) and attention.labels(name) == (attention.tokens, attention.tokens)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        assert not np.any(np.triu(probs, k=1))


def test_classifier_attention_sees_both_ways_from_cls(classifier_run):
    attention = attention_of_text(llmscratch.load(classifier_run), "good film")
    probs = attention.maps[attention.layers()[-1]]
    assert attention.layers() == attention.layers("encoder")
    assert attention.tokens[0] == "[CLS]" and len(attention.tokens) == probs.shape[-1]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.any(np.triu(probs, k=1) > 0)  # bidirectional: keys after the query are seen


def test_translator_attention_has_its_three_parts(translator_run):
    """Encoder self (S×S, both ways), decoder self (T×T, causal), cross (T×S), on [BOS] + the given target or,
    by default, on [BOS] + the model's own greedy translation."""
    ck = llmscratch.load(translator_run)
    attention = attention_of_text(ck, "two five", target="deux cinq")
    source, target = attention.tokens, attention.target
    assert source == list("two␣five") and target == ["[BOS]", *"deux␣cinq"]
    S, T = len(source), len(target)
    assert attention.layers() == attention.layers("cross") == ["decoder.h.0.cross_attn", "decoder.h.1.cross_attn"]
    shapes = {"encoder": (2, S, S), "decoder": (2, T, T), "cross": (2, T, S)}
    for part, shape in shapes.items():
        for name in attention.layers(part):
            probs = attention.maps[name]
            assert probs.shape == shape and tuple(map(len, attention.labels(name))) == shape[1:]
            np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
            assert np.any(np.triu(probs, k=1)) == (part != "decoder")
    own = attention_of_text(ck, "two five").target
    greedy = ck.task_runner.translate_ids(ck.model, ck.task_runner.encode_sources(["two five"]))[0]
    assert own == ["[BOS]", *token_labels(ck.tokenizer, greedy)][:16]  # at most block_size inputs


def test_token_labels_make_whitespace_visible():
    tok = llmscratch.tokenizers.CharTokenizer.train("a b\n\tc")
    assert token_labels(tok, tok.encode("a b\n\t")) == ["a", "␣", "b", "⏎", "⇥"]
    assert token_labels(tok, [99], {99: "[CLS]"}) == ["[CLS]"]


def test_heatmaps_draw_the_probabilities_and_write_the_same_png_twice(tmp_path, rng):
    probs = rng.dirichlet(np.ones(4), size=(3, 5))  # (H=3, T=5, S=4), rows sum to 1
    labels, keys = list("abcde"), list("wxyz")
    fig = attention_heatmap(probs[1], labels, keys, title="h1", out=tmp_path / "one.png")
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), probs[1])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == keys
    attention_heatmap(probs[1], labels, keys, title="h1", out=tmp_path / "again.png")
    png = (tmp_path / "one.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert png == (tmp_path / "again.png").read_bytes()
    grid = attention_heads(probs, labels, keys, out=tmp_path / "all.png")
    drawn = [ax.images[0].get_array() for ax in grid.axes if ax.images]
    assert len(drawn) == 3 and all(np.array_equal(d, p) for d, p in zip(drawn, probs, strict=True))
    assert (tmp_path / "all.png").stat().st_size > 1000


def test_heatmaps_refuse_shapes_and_labels_that_do_not_fit():
    with pytest.raises(ConfigError, match=r"one head's attention is \(T, S\)"):
        attention_heatmap(np.ones((2, 3, 3)), list("abc"))
    with pytest.raises(ConfigError, match="need 3 query and 3 key labels"):
        attention_heatmap(np.ones((3, 3)), list("ab"))
    with pytest.raises(ConfigError, match=r"a layer's attention is \(H, T, S\)"):
        attention_heads(np.ones((3, 3)), list("abc"))


def test_training_curves_draw_the_history(gpt_run, tmp_path):
    history = llmscratch.load(gpt_run).state["history"]
    fig = training_curves(history, out=tmp_path / "c.png")
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    val = [(h["step"], h["val_loss"]) for h in history if h["val_loss"] is not None]
    np.testing.assert_array_equal(lines["val (evaluated)"].get_xydata(), np.array(val))
    assert len(lines["train (each step)"].get_xdata()) == 20
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="no losses to draw"):
        training_curves([])


def test_plot_and_attention_commands(gpt_run, tmp_path, capsys):
    assert main(["plot", "--checkpoint", str(gpt_run), "--out", str(tmp_path / "curves.png")]) == 0
    assert (
        main(["attention", "--checkpoint", str(gpt_run), "--text", "import os", "--out", str(tmp_path / "a.png")]) == 0
    )
    one = ["attention", "--checkpoint", str(gpt_run), "--text", "x = 1", "--layer", "1", "--head", "0"]
    assert main([*one, "--out", str(tmp_path / "h.png")]) == 0
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("curves.png", "a.png", "h.png"))
    capsys.readouterr()
    bad = {
        "--layer 2": ["--text", "x", "--layer", "2"],
        "--head 5": ["--text", "x", "--head", "5"],
        "longer than the model's context": ["--text", "x" * 40],
    }
    for message, args in bad.items():
        assert main(["attention", "--checkpoint", str(gpt_run), *args, "--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_attention_command_on_a_translator_and_parts_a_model_lacks(translator_run, gpt_run, tmp_path, capsys):
    base = ["attention", "--text", "one two", "--out"]
    assert main([*base, str(tmp_path / "cross.png"), "--checkpoint", str(translator_run)]) == 0
    encoder = ["--part", "encoder", "--layer", "1", "--head", "1"]
    assert main([*base, str(tmp_path / "enc.png"), "--checkpoint", str(translator_run), *encoder]) == 0
    assert main([*base, str(tmp_path / "dec.png"), "--checkpoint", str(translator_run), "--target", "un"]) == 0
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("cross.png", "enc.png", "dec.png"))
    capsys.readouterr()
    bad = {"this model has decoder attention; pick that": ["--part", "cross"], "drop it": ["--target", "un"]}
    for message, args in bad.items():
        assert main([*base, str(tmp_path / "x.png"), "--checkpoint", str(gpt_run), *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_of_a_checkpoint_without_history(gpt_run, tmp_path, capsys):
    converted = tmp_path / "converted"
    convert(gpt_run, converted, to="llmscratch")
    assert main(["plot", "--checkpoint", str(converted), "--out", str(tmp_path / "c.png")]) == 2
    assert "has no training history" in capsys.readouterr().err


def test_attention_of_a_text_too_long_is_a_data_error(gpt_run):
    with pytest.raises(DataError, match="the text of 20 tokens is longer than the model's context"):
        attention_of_text(llmscratch.load(gpt_run), "y" * 20)


def test_attention_of_a_translation_too_long_is_a_data_error(translator_run):
    ck = llmscratch.load(translator_run)
    with pytest.raises(DataError, match="longer than the context"):
        attention_of_text(ck, "one " * 10)
    with pytest.raises(DataError, match="the target with \\[BOS\\] of 17 tokens is longer than the model's context"):
        attention_of_text(ck, "one", target="u" * 16)


def test_metrics_log_follows_the_run_and_a_resume(tmp_path):
    """metrics.jsonl holds the history line by line as the run goes; a resume rewrites it from the checkpoint,
    so repeated steps appear once; a torn last line is skipped; `plot` reads it."""
    out = tmp_path / "run"
    first = llmscratch.train(max_iters=8, eval_interval=4, out_dir=str(out), log_interval=1, **TINY)
    assert read_metrics(out) == json.loads(json.dumps(first.history))
    resumed = llmscratch.train(max_iters=12, eval_interval=4, out_dir=str(out), resume=True, log_interval=1, **TINY)
    entries = read_metrics(out)
    assert entries == json.loads(json.dumps(resumed.history))
    assert [e["step"] for e in entries if e["train_loss"] is not None] == list(range(12))
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 12, "train_lo')  # a crash mid-line
    assert read_metrics(out) == entries
    assert main(["plot", "--checkpoint", str(out), "--out", str(tmp_path / "c.png")]) == 0


def test_positional_encoding_figures_draw_the_tables(tmp_path):
    from llmscratch import ops
    from llmscratch.backends import get_backend
    from llmscratch.viz import rope_rotations, sinusoidal_encodings

    fig = sinusoidal_encodings(32, 16, out=tmp_path / "pe.png")
    bk = get_backend("numpy", dtype="float64")
    pe = bk.to_numpy(ops.sinusoidal_table(bk, 32, 16))
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), pe)
    similarity = np.asarray(fig.axes[1].images[0].get_array())  # axes: table, similarity, then the colorbars
    np.testing.assert_allclose(np.diag(similarity), 8.0)  # Σ sin² + cos² over 8 pairs
    np.testing.assert_allclose(similarity[3, 7], similarity[10, 14])  # depends on the distance alone
    fig = rope_rotations(40, 8, pairs=2, out=tmp_path / "rope.png")
    theta = ops.rope_frequencies(8)
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), np.mod(np.arange(40) * theta[1], 2 * np.pi))
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("pe.png", "rope.png"))


def test_next_token_bars_show_the_sampled_distribution(gpt_run, tmp_path):
    from llmscratch.generation.text import prompt_ids
    from llmscratch.viz import next_token_distribution, probability_bars

    ck = llmscratch.load(gpt_run)
    p = next_token_distribution(ck, "def ", temperature=0.7, top_k=5)
    assert p.shape == (ck.tokenizer.vocab_size,) and p.sum() == pytest.approx(1.0) and np.count_nonzero(p) == 5
    ids = prompt_ids(ck.tokenizer, "def ")
    logits = ck.model.bk.to_numpy(ck.model.forward(np.asarray([ids]))[0])[0, -1] / 0.7
    top = np.argsort(-logits)[:5]
    want = np.exp(logits[top] - logits[top].max())
    np.testing.assert_allclose(p[top], want / want.sum(), rtol=1e-5)
    labels = token_labels(ck.tokenizer, range(len(p)))
    fig = probability_bars(p, labels, top=5, out=tmp_path / "p.png")
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    np.testing.assert_allclose(heights, np.sort(p)[::-1][:5])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [labels[i] for i in top]


def test_embedding_map_and_bpe_merges(tmp_path):
    from llmscratch.tokenizers import BPETokenizer
    from llmscratch.viz import bpe_merges, embedding_projection

    w = np.zeros((4, 3))
    w[:, 0] = [0, 1, 2, 3]  # all the variance along one axis
    fig = embedding_projection(w, list("abcd"), out=tmp_path / "e.png")
    xy = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(np.abs(xy[:, 0]), [1.5, 0.5, 0.5, 1.5])
    np.testing.assert_allclose(xy[:, 1], 0.0, atol=1e-12)
    tok = BPETokenizer.train("low lower lowest " * 20, 260)
    fig = bpe_merges(tok, first=3, out=tmp_path / "m.png")
    text = fig.axes[0].texts[0].get_text().splitlines()
    assert len(text) == 3 and text[0].startswith("  1.")
    *_, new = tok.merges[0]
    assert text[0].endswith(token_labels(tok, [new])[0])
    with pytest.raises(ConfigError, match="no merges"):
        bpe_merges(llmscratch.tokenizers.CharTokenizer.train("abc"))


def test_tensorboard_event_files_hold_the_history(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    result = llmscratch.train(
        max_iters=6, eval_interval=3, out_dir=str(tmp_path), log_interval=1, tensorboard=True, **TINY
    )
    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in (tmp_path / "tensorboard").iterdir():
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.tensor.float_val[0]))
    want = [(h["step"], h["val_loss"]) for h in result.history if h["val_loss"] is not None]
    assert [s for s, _ in scalars["val_loss"]] == [s for s, _ in want]
    np.testing.assert_allclose([v for _, v in scalars["val_loss"]], [v for _, v in want], rtol=1e-6)
    assert len(scalars["train_loss"]) == 6 and "lr" in scalars and "tokens_per_s" in scalars
    with pytest.raises(ConfigError, match="give an out_dir"):
        llmscratch.train(max_iters=1, tensorboard=True, **TINY)
