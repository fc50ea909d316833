"""Hugging Face model directories in and out, against transformers itself: random weights, no download.

Each reference model is built by transformers, saved by its own save_pretrained, and loaded through the public
``llmscratch.load``; logits must agree to 1e-10 and every parameter gradient to 1e-9 (relative, float64)
against torch autograd of the same transformers model, on every backend available here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_backend, rel_err

import llmscratch
from llmscratch.interop import family_for, read_hf
from llmscratch.tokenizers import load as load_tokenizer
from llmscratch.util.errors import CheckpointError, ConfigError, LLMScratchError
from llmscratch.util.tensors import read_safetensors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CPU_BACKENDS = ("numpy", "torch", "strict", "cupy", "torch-cuda")


def gpt2(vocab=97, T=17, C=48, L=2, H=3, **kw):
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=T, n_embd=C, n_layer=L, n_head=H, **kw)
    return transformers.GPT2LMHeadModel(cfg)


def llama(vocab=97, T=17, C=48, L=2, H=4, Hkv=2, F=40, theta=500000.0, **kw):
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=C,
        intermediate_size=F,
        num_hidden_layers=L,
        num_attention_heads=H,
        num_key_value_heads=Hkv,
        max_position_embeddings=T,
        rope_theta=theta,
        **kw,
    )
    return transformers.LlamaForCausalLM(cfg)


def bert(vocab=97, T=17, C=48, L=2, H=3, F=40, labels=3, cls=None, **kw):
    cfg = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=C,
        num_hidden_layers=L,
        num_attention_heads=H,
        intermediate_size=F,
        max_position_embeddings=T,
        type_vocab_size=2,
        num_labels=labels,
        **kw,
    )
    return (cls or transformers.BertForSequenceClassification)(cfg)


def saved(model, path: Path, **kw) -> Path:
    """A transformers model in float64 and eval mode, written by its own save_pretrained."""
    model.to(torch.float64).eval().save_pretrained(path, **kw)
    return path


def float64_llama(hf_model) -> None:
    """transformers computes the RoPE angles and the RMSNorm statistics in float32 even in a float64 Llama
    (about 1e-8 of error); swap in the same formulas in float64 so that everything else is checked at 1e-10."""
    cfg = hf_model.config
    D = cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"]

    def rope(x, position_ids):
        inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
        angles = position_ids[..., None].to(torch.float64) * inv
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def rms_norm(norm):
        return lambda x: norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))

    hf_model.model.rotary_emb.forward = rope
    for module in hf_model.modules():
        if type(module).__name__ == "LlamaRMSNorm":
            module.forward = rms_norm(module)


def their_grads(hf_model) -> dict[str, np.ndarray]:
    return {n: p.grad.numpy() for n, p in hf_model.named_parameters() if p.grad is not None}


def our_grads_as_theirs(ck, grads) -> dict[str, np.ndarray]:
    """Our gradients under transformers' names and layouts (the family's rules, saving direction)."""
    family = family_for(ck.model.config)
    out = {}
    for rule in family.rules(ck.model.config):
        out.update(rule.save(ck.model.bk.to_numpy(grads[rule.ours])))
    return out


def check_grads(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], tol: float = 1e-9) -> None:
    """Every gradient within tol of transformers', relative to its largest entry; a gradient that is zero in
    exact arithmetic (the key bias: softmax ignores a shift of every score) is held to 1e-8 · tol absolute."""
    tied = {"lm_head.weight"} & set(theirs) - set(ours)  # transformers' tied head shares wte's gradient
    assert set(ours) == set(theirs) - tied
    for name, g in ours.items():
        assert rel_err(g, theirs[name], floor=1e-8) <= tol, name


LM_CASES = {
    "gpt2 48/3 heads, vocab 97, T 17": lambda: gpt2(),
    "gpt2 exact gelu, untied head": lambda: gpt2(50, 9, 32, H=4, activation_function="gelu", tie_word_embeddings=False),
    "gpt2 relu, n_inner 20": lambda: gpt2(31, 5, 16, L=3, H=2, activation_function="relu", n_inner=20),
    "llama 1 kv head, theta 5e5": lambda: llama(Hkv=1),
    "llama 2 kv heads, tied": lambda: llama(Hkv=2, tie_word_embeddings=True),
    "llama attention bias, no mlp bias": lambda: llama(40, 9, 32, H=2, Hkv=2, F=24, theta=1e4, attention_bias=True),
    "llama mlp bias": lambda: llama(40, 9, 32, H=4, Hkv=1, F=24, mlp_bias=True),
}


@pytest.mark.parametrize("backend_id", CPU_BACKENDS)
@pytest.mark.parametrize("case", list(LM_CASES))
def test_causal_lm_parity(case, backend_id, tmp_path):
    bk = make_backend(backend_id, "float64")
    torch.manual_seed(0)
    hf = LM_CASES[case]()
    path = saved(hf, tmp_path / "hf")
    ck = llmscratch.load(path, backend=bk)
    V, T = hf.config.vocab_size, ck.model.config.block_size
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, V, (2, T)), rng.integers(0, V, (2, T))
    if "llama" in case:
        float64_llama(hf)
    out = hf(input_ids=torch.tensor(idx))
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, V), torch.tensor(targets).reshape(-1))
    loss.backward()
    logits, our_loss = ck.model.forward(idx, targets)
    assert rel_err(bk.to_numpy(logits), out.logits.detach().numpy()) <= 1e-10
    assert abs(bk.item(our_loss) - loss.item()) <= 1e-10
    check_grads(our_grads_as_theirs(ck, ck.model.backward()), their_grads(hf))


LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}


@pytest.mark.parametrize("rope", [None, {"rope_type": "linear", "factor": 4.0}, LLAMA3_SCALING])
def test_llama_float32_parts_bound_the_unpatched_reference(rope, tmp_path):
    """Unpatched, the difference is what transformers' float32 RoPE angles and RMSNorm statistics cost:
    above 1e-10 (so the patch matters), below 1e-6; with rope scaling (linear, Llama 3.1's) too, whose
    frequencies transformers also computes in float32."""
    torch.manual_seed(0)
    hf = (
        llama(H=2, Hkv=1, C=64)
        if rope is None
        else llama(H=2, Hkv=1, C=64, rope_parameters={"rope_theta": 5e5, **rope})
    )
    ck = llmscratch.load(saved(hf, tmp_path / "hf"), dtype="float64")
    assert ck.model.config.rope_type == (rope or {}).get("rope_type", "default")
    idx = np.random.default_rng(0).integers(0, 97, (2, 17))
    err = rel_err(np.asarray(ck.model.forward(idx)[0]), hf(input_ids=torch.tensor(idx)).logits.detach().numpy())
    assert 1e-10 < err <= 1e-6
    llmscratch.save_hf(ck, tmp_path / "again")
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "again")
    assert again.config.rope_parameters == hf.config.rope_parameters


WIDE_LLAMA3 = {**LLAMA3_SCALING, "factor": 32.0, "high_freq_factor": 2.0, "original_max_position_embeddings": 64}


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 4.0}, LLAMA3_SCALING, WIDE_LLAMA3])
def test_rope_frequencies_match_transformers(rope):
    """Every wavelength band of Llama 3.1's rescaling (stretched, blended, kept), against transformers'
    own rope_init functions (which compute in float32)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from llmscratch.ops import rope_frequencies

    config = transformers.LlamaConfig(
        hidden_size=128, num_attention_heads=2, rope_parameters={"rope_theta": 5e5, **rope}
    )
    theirs, _ = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, "cpu")
    ours = rope_frequencies(
        64,
        5e5,
        rope["rope_type"],
        rope["factor"],
        rope.get("low_freq_factor", 1.0),
        rope.get("high_freq_factor", 4.0),
        rope.get("original_max_position_embeddings", 8192),
    )
    assert rel_err(ours, theirs.double().numpy()) <= 1e-6
    assert not np.allclose(ours, rope_frequencies(64, 5e5))  # the scaling changed something


@pytest.mark.parametrize("backend_id", CPU_BACKENDS)
def test_bert_classifier_parity(backend_id, tmp_path):
    bk = make_backend(backend_id, "float64")
    torch.manual_seed(0)
    hf = bert()
    ck = llmscratch.load(saved(hf, tmp_path / "hf"), backend=bk)
    assert ck.task == "classify" and ck.meta["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"] and not ck.fresh
    rng = np.random.default_rng(0)
    idx, types = rng.integers(1, 97, (3, 17)), rng.integers(0, 2, (3, 17))
    mask = np.ones((3, 17), dtype=bool)
    mask[1, 11:], mask[2, 4:] = False, False  # padded rows
    idx[~mask] = 0  # [PAD], BERT's padding_idx: transformers gives its embedding row no gradient
    labels = np.array([0, 2, 1])
    out = hf(
        input_ids=torch.tensor(idx),
        token_type_ids=torch.tensor(types),
        attention_mask=torch.tensor(mask.astype(np.int64)),
        labels=torch.tensor(labels),
    )
    out.loss.backward()
    logits, loss = ck.model.forward(idx, labels, key_mask=mask, token_types=types)
    assert rel_err(bk.to_numpy(logits), out.logits.detach().numpy()) <= 1e-10
    assert abs(bk.item(loss) - out.loss.item()) <= 1e-10
    check_grads(our_grads_as_theirs(ck, ck.model.backward()), their_grads(hf))


def test_bert_model_without_head_loads_for_features_and_fine_tuning(tmp_path):
    """BertModel has no classifier: the encoder's outputs match last_hidden_state and pooler_output, and the
    head is named as newly drawn; classify() refuses until it is fine-tuned."""
    torch.manual_seed(0)
    hf = bert(cls=transformers.BertModel)
    ck = llmscratch.load(saved(hf, tmp_path / "hf"), dtype="float64")
    assert ck.fresh == ["classifier.weight", "classifier.bias"]
    idx = np.random.default_rng(0).integers(0, 97, (2, 17))
    mask = np.ones((2, 17), dtype=bool)
    mask[1, 9:] = False
    hidden, pooled = ck.model.encode(idx, key_mask=mask)
    ref = hf(input_ids=torch.tensor(idx), attention_mask=torch.tensor(mask.astype(np.int64)))
    assert rel_err(np.asarray(hidden)[mask], ref.last_hidden_state.detach().numpy()[mask]) <= 1e-10
    assert rel_err(np.asarray(pooled), ref.pooler_output.detach().numpy()) <= 1e-10
    with pytest.raises(ConfigError, match="newly initialized"):
        ck.classify(["a text"])


@pytest.mark.parametrize("make", [gpt2, llama, bert], ids=["gpt2", "llama", "bert"])
def test_hf_to_ours_to_hf_gives_identical_tensors(make, tmp_path):
    torch.manual_seed(0)
    src = saved(make(), tmp_path / "src")
    llmscratch.save_hf(llmscratch.load(src, dtype="float64"), tmp_path / "dst")
    a, b = read_safetensors(src / "model.safetensors"), read_safetensors(tmp_path / "dst" / "model.safetensors")
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


def test_sharded_checkpoint_and_original_gpt2_names(tmp_path):
    torch.manual_seed(0)
    hf = gpt2()
    whole = llmscratch.load(saved(hf, tmp_path / "whole"), dtype="float64")
    shards = llmscratch.load(saved(hf, tmp_path / "shards", max_shard_size="20KB"), dtype="float64")
    assert len(list((tmp_path / "shards").glob("model-*.safetensors"))) > 1
    # OpenAI's GPT-2 files as the Hub keeps them: no "transformer." prefix, the attention-mask buffers
    import safetensors.numpy

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tmp_path / "whole" / "config.json").read_text())
    tensors = {n.removeprefix("transformer."): t.detach().numpy() for n, t in hf.state_dict().items()}
    tensors.pop("lm_head.weight", None)
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 17, 17), dtype=np.float64))
    safetensors.numpy.save_file(tensors, str(bare / "model.safetensors"))
    original = llmscratch.load(bare, dtype="float64")
    for name, p in whole.model.params.items():
        assert np.array_equal(np.asarray(p), np.asarray(shards.model.params[name]))
        assert np.array_equal(np.asarray(p), np.asarray(original.model.params[name]))


LLAMA_SHAPE = {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_head": 2, "tie_embeddings": False}
BERT_SHAPE = {"norm_first": False, "embed_norm": True, "pooler": True, "type_vocab_size": 2, "mlp": "gelu_exact"}


@pytest.mark.parametrize(
    "kind, shape, cls",
    [
        ("gpt", {}, "GPT2LMHeadModel"),  # bias=False: saved as GPT-2 with zero biases
        ("gpt", LLAMA_SHAPE, "LlamaForCausalLM"),
        ("encoder", BERT_SHAPE, "BertForSequenceClassification"),
    ],
    ids=["gpt2", "llama", "bert"],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ours_to_hf_loads_in_transformers_with_the_same_logits(kind, shape, cls, dtype, tmp_path):
    from llmscratch.models import ModelConfig, model_class

    cfg = ModelConfig(kind=kind, vocab_size=23, n_classes=3, n_layer=2, n_head=4, n_embd=32, block_size=12, **shape)
    model = model_class(kind)(cfg, llmscratch.get_backend("numpy", dtype=dtype), seed=3)
    model.training = False
    out = llmscratch.save_hf(model, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [cls] and config["dtype"] == dtype
    hf = getattr(transformers, cls).from_pretrained(out).eval()
    assert hf.dtype == getattr(torch, dtype)
    idx = np.random.default_rng(1).integers(0, 23, (2, 12))
    if "Llama" in cls and dtype == "float64":
        float64_llama(hf)
    ours = np.asarray(model.forward(idx)[0])
    theirs = hf(input_ids=torch.tensor(idx)).logits.detach().numpy()
    assert rel_err(ours, theirs) <= (1e-10 if dtype == "float64" else 1e-5)


def test_bfloat16_weights_stay_bfloat16(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "src"
    gpt2().to(torch.bfloat16).save_pretrained(src)
    ck = llmscratch.load(src, backend="torch", dtype="bfloat16")
    llmscratch.save_hf(ck, tmp_path / "dst")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "dst")
    assert back.dtype == torch.bfloat16
    ref = transformers.GPT2LMHeadModel.from_pretrained(src)
    for name, t in ref.state_dict().items():
        assert torch.equal(t, back.state_dict()[name]), name


# ---- a trained model, its tokenizer and the command line ---------------------------------------------------


def test_trained_char_model_round_trips_through_transformers_with_its_tokenizer(tmp_path):
    result = llmscratch.train(
        max_iters=2,
        eval_iters=1,
        n_layer=1,
        n_embd=32,
        n_head=2,
        block_size=16,
        progress=False,
        out_dir=str(tmp_path / "out"),
    )
    out = llmscratch.save_hf(result, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "def f(x):\n    return x"
    assert tok(text)["input_ids"] == result.tokenizer.encode(text)
    assert tok.decode(result.tokenizer.encode(text)) == text
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    idx = np.array([result.tokenizer.encode(text)[:16]])
    result.model.training = False
    ours = np.asarray(result.model.forward(idx)[0])
    assert rel_err(ours, hf(input_ids=torch.tensor(idx)).logits.detach().numpy()) <= 1e-5
    again = llmscratch.load(out)
    assert again.tokenizer.encode(text) == result.tokenizer.encode(text)


def test_trained_bert_shaped_classifier_classifies_alike_in_transformers(tmp_path):
    """A classifier trained here with BERT's shape and a char tokenizer: transformers' tokenizer from the saved
    directory encodes [CLS] + text as llmscratch does, and the model gives the same probabilities."""
    csv = tmp_path / "data.csv"
    csv.write_text(
        "text,label\n" + "".join(f"{'good' if i % 2 else 'bad'} thing {i},{'ab'[i % 2]}\n" for i in range(60))
    )
    clf = llmscratch.train(
        task="classify",
        data=str(csv),
        max_iters=3,
        eval_iters=1,
        n_layer=1,
        n_embd=32,
        n_head=2,
        block_size=24,
        norm_first=False,
        embed_norm=True,
        pooler=True,
        mlp="gelu_exact",
        type_vocab_size=2,
        progress=False,
    )
    texts = ["good thing 3", "bad thing 12", "good"]
    out = llmscratch.save_hf(clf, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert [tok(t)["input_ids"] for t in texts] == clf.task_runner.encode_texts(texts)
    hf = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.id2label == {0: "a", 1: "b"}
    ref = torch.softmax(hf(**tok(texts, padding=True, return_tensors="pt")).logits, -1).detach().numpy()
    ours = [[p["a"], p["b"]] for p in clf.classify(texts, probabilities=True)]
    assert np.allclose(ours, ref, atol=1e-5, rtol=0)
    again = llmscratch.load(out)
    assert again.classify(texts) == clf.classify(texts) and again.tokenizer.kind == "char"


def gpt2_with_tokenizer(path: Path, text: str) -> Path:
    """A random GPT-2 with a byte-level BPE tokenizer.json of the same vocabulary (ours, trained on text)."""
    from llmscratch.tokenizers import BPETokenizer

    bpe = BPETokenizer.train(text, 300)
    torch.manual_seed(0)
    saved(gpt2(vocab=bpe.vocab_size, T=32, C=32, H=2, bos_token_id=299, eos_token_id=299), path)
    bpe.to_huggingface().save(str(path / "tokenizer.json"))
    return path


def test_hf_gpt2_samples_like_transformers_generate(tmp_path, shakespeare):
    path = gpt2_with_tokenizer(tmp_path / "hf", shakespeare[:20000])
    ck = llmscratch.load(path, dtype="float64")
    prompt = "ROMEO:"
    ours = ck.sample(prompt, 12, temperature=0)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    ids = torch.tensor([ck.tokenizer.encode(prompt)])
    ref = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert ours == ck.tokenizer.decode(ref[0].tolist())


def run_cli(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from llmscratch.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_convert_sample_and_init_from(tmp_path, shakespeare):
    data = tmp_path / "text.txt"
    data.write_text(shakespeare[:20000])
    hf = gpt2_with_tokenizer(tmp_path / "hf", shakespeare[:20000])
    code, out, _ = run_cli("sample", "--checkpoint", str(hf), "--prompt", "To be", "--max-new-tokens", "5")
    assert code == 0 and out.startswith("To be")
    code, _, _ = run_cli("convert", str(hf), str(tmp_path / "ours"), "--to", "llmscratch")
    assert code == 0
    code, _, _ = run_cli("convert", str(tmp_path / "ours"), str(tmp_path / "hf-again"), "--to", "hf")
    assert code == 0
    a, b = read_safetensors(hf / "model.safetensors"), read_safetensors(tmp_path / "hf-again" / "model.safetensors")
    assert set(a) == set(b) and all(np.array_equal(a[n].astype(np.float32), b[n]) for n in a)
    code, out, err = run_cli(
        "train",
        "--init-from",
        str(hf),
        "--data",
        str(data),
        "--max-iters",
        "2",
        "--eval-iters",
        "1",
        "--batch-size",
        "2",
        "--sample-tokens",
        "0",
        "--quiet",
        "--out",
        str(tmp_path / "tuned"),
    )
    assert code == 0, err
    tuned = llmscratch.load(tmp_path / "tuned")
    assert tuned.model.config.n_embd == 32 and tuned.tokenizer.vocab_size == 300
    code, _, err = run_cli("convert", str(hf), str(tmp_path / "ours"), "--to", "llmscratch")
    assert code == 2 and "not empty" in err
    code, _, err = run_cli("train", "--init-from", str(hf), "--data", str(data), "--block-size", "48", "--quiet")
    assert code == 2 and "drop block_size=48 (it has 32)" in err  # a context can shrink, never grow


def test_bert_classifies_like_transformers_and_fine_tunes(tmp_path, shakespeare):
    """A BERT directory with its vocab.txt: llmscratch's classify ([CLS] text [SEP], padded) gives the
    probabilities transformers gives for the tokenizer's own encoding; --init-from fine-tunes it with a
    new head for the data's labels."""
    from llmscratch.tokenizers import WordPieceTokenizer

    wp = WordPieceTokenizer.train(shakespeare[:50000], 200)
    torch.manual_seed(0)
    path = saved(bert(vocab=200, T=32, C=32, H=2, labels=2, id2label={0: "neg", 1: "pos"}), tmp_path / "hf")
    wp.save_vocab_txt(path / "vocab.txt")
    ck = llmscratch.load(path, dtype="float64")
    texts = ["Good morrow, my lord.", "What, ho! Romeo!", "I pray thee, speak."]
    probs = ck.classify(texts, probabilities=True)
    tok = transformers.BertTokenizerFast.from_pretrained(path)
    hf = transformers.BertForSequenceClassification.from_pretrained(path).eval()
    ref = torch.softmax(hf(**tok(texts, padding=True, return_tensors="pt")).logits, -1).detach().numpy()
    assert np.allclose([[p["neg"], p["pos"]] for p in probs], ref, atol=1e-12, rtol=0)
    scored = tmp_path / "scored.csv"
    truth = ["neg", "pos", "pos"]
    scored.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in zip(texts, truth, strict=True)))
    code, out, _ = run_cli("eval", "--checkpoint", str(path), "--data", str(scored))
    want = np.mean([["neg", "pos"][int(i)] == y for i, y in zip(ref.argmax(-1), truth, strict=True)])
    assert code == 0 and f"accuracy {want:.4f}" in out
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\n" + "".join(f"line {i} of text,{'ab'[i % 2]}\n" for i in range(40)))
    code, _, err = run_cli(
        "train",
        "--task",
        "classify",
        "--init-from",
        str(path),
        "--data",
        str(csv),
        "--max-iters",
        "2",
        "--eval-iters",
        "1",
        "--batch-size",
        "4",
        "--quiet",
        "--out",
        str(tmp_path / "cls"),
    )
    assert code == 0, err
    tuned = llmscratch.load(tmp_path / "cls")
    assert tuned.task_runner.labels == ["a", "b"] and tuned.model.config.pooler
    code, out, _ = run_cli("classify", "--checkpoint", str(tmp_path / "cls"), "line 3 of text")
    assert code == 0 and out.strip() in ("a", "b")


# ---- bad input -------------------------------------------------------------------------------------------


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    path = saved(gpt2(), tmp_path / "hf")
    edit_config(path, architectures=["T5ForConditionalGeneration"], model_type="t5")
    with pytest.raises(
        ConfigError, match=r"T5ForConditionalGeneration is not supported.*GPT2LMHeadModel.*LlamaForCausalLM"
    ):
        llmscratch.load(path)


def test_unsupported_options_are_named(tmp_path):
    path = saved(llama(), tmp_path / "hf")
    edit_config(path, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}, rope_scaling=None)
    with pytest.raises(ConfigError, match="rope_type 'yarn'"):
        llmscratch.load(path)


def test_every_unsupported_option_is_named_in_one_line(tmp_path):
    path = saved(bert(), tmp_path / "hf")
    edit_config(path, hidden_act="swish", is_decoder=True, position_embedding_type="relative_key")
    with pytest.raises(ConfigError) as err:
        llmscratch.load(path)
    message = str(err.value)
    assert "\n" not in message
    for part in ("hidden_act 'swish'", "is_decoder True", "position_embedding_type 'relative_key'"):
        assert part in message


def test_a_config_without_a_required_field_names_it(tmp_path):
    path = saved(llama(), tmp_path / "hf")
    config = json.loads((path / "config.json").read_text())
    del config["num_hidden_layers"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"config\.json: 'num_hidden_layers' is missing"):
        llmscratch.load(path)


@pytest.mark.parametrize("make", [gpt2, llama, bert], ids=["gpt2", "llama", "bert"])
def test_each_family_reads_back_the_config_it_writes(make, tmp_path):
    """Loading a transformers model, saving it and loading that again gives the same architecture, and every
    field of theirs that one of ours is read from is written back as it was."""
    from llmscratch.interop.families import family_of

    model = make()
    first = llmscratch.load(saved(model, tmp_path / "theirs"))
    written = llmscratch.save_hf(first, tmp_path / "ours")
    again = llmscratch.load(written)
    assert again.model.config == first.model.config
    theirs, ours = model.config.to_dict(), json.loads((written / "config.json").read_text())
    family = family_of(ours, "config.json")
    for field in family.fields:
        if field.ours is not None and field.theirs in theirs:
            assert ours[field.theirs] == theirs[field.theirs], field.theirs


def test_missing_and_unexpected_weights_are_listed(tmp_path):
    import safetensors.numpy

    path = saved(gpt2(), tmp_path / "hf")
    tensors = safetensors.numpy.load_file(str(path / "model.safetensors"))
    tensors.pop("transformer.h.1.mlp.c_fc.weight")
    tensors["transformer.h.0.attn.extra"] = np.zeros(3)
    safetensors.numpy.save_file(tensors, str(path / "model.safetensors"))
    listed = r"missing transformer\.h\.1\.mlp\.c_fc\.weight; unexpected transformer\.h\.0\.attn\.extra"
    with pytest.raises(CheckpointError, match=listed):
        llmscratch.load(path)


def test_shape_mismatch_names_the_weight(tmp_path):
    path = saved(llama(), tmp_path / "hf")
    edit_config(path, intermediate_size=44)
    with pytest.raises(
        CheckpointError, match=r"gate_proj\.weight has shape \(40, 48\), config\.json makes it \(44, 48\)"
    ):
        llmscratch.load(path)


def test_pickle_only_directory_is_refused(tmp_path):
    path = saved(gpt2(), tmp_path / "hf")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin, a pickle.*convert it to safetensors"):
        llmscratch.load(path)


def test_tokenizer_that_disagrees_with_the_config(tmp_path, shakespeare):
    from llmscratch.tokenizers import BPETokenizer

    path = gpt2_with_tokenizer(tmp_path / "hf", shakespeare[:5000])
    BPETokenizer.train(shakespeare[:5000], 301).to_huggingface().save(str(path / "tokenizer.json"))
    with pytest.raises(CheckpointError, match=r"tokenizer has 301 token ids but config\.json's vocab_size is 300"):
        llmscratch.load(path)


def test_save_hf_refuses_what_has_no_counterpart_and_never_overwrites(tmp_path):
    from llmscratch.models import GPT, GPTConfig

    with pytest.raises(ConfigError, match=r"GPT2LMHeadModel needs pos=learned.*this model has pos=sinusoidal"):
        llmscratch.save_hf(GPT(GPTConfig(vocab_size=11, pos="sinusoidal")), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    target = tmp_path / "b"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty"):
        llmscratch.save_hf(GPT(GPTConfig(vocab_size=11)), target)
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


def test_read_hf_is_importable_without_loading_a_backend(tmp_path):
    torch.manual_seed(0)
    model = read_hf(saved(bert(), tmp_path / "hf"))
    assert model.config.kind == "encoder" and model.config.type_vocab_size == 2 and model.tokenizer is None
    assert isinstance(model.tensors["encoder.h.0.attn.c_attn.weight"], np.ndarray)
    with pytest.raises(LLMScratchError, match="needs a tokenizer"):
        llmscratch.load(tmp_path / "hf").classify(["text"])


def documented_commands() -> list[str]:
    """The shell commands of docs/hf-interop.md's first block, in order."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "hf-interop.md").read_text(encoding="utf-8")
    block = page.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_the_documented_commands_run_on_a_gpt2_shaped_directory(tmp_path, shakespeare, monkeypatch):
    """The commands of docs/hf-interop.md, as written, on a small random GPT-2 with a BPE tokenizer in ./gpt2
    (no network): the pipeline's text starts with the prompt and the fine-tuned model keeps --block-size."""
    import shlex
    import subprocess
    import sys

    gpt2_with_tokenizer(tmp_path / "gpt2", shakespeare[:20000])
    edit_config(tmp_path / "gpt2", n_positions=256)  # longer than --block-size 128, as GPT-2's 1024 is
    commands = documented_commands()
    assert [c.split()[:2] for c in commands] == [
        ["llmscratch", "sample"],
        ["llmscratch", "train"],
        ["llmscratch", "convert"],
        ["python", "-c"],
    ]
    monkeypatch.chdir(tmp_path)
    import safetensors.numpy

    tensors = safetensors.numpy.load_file("gpt2/model.safetensors")
    tensors["transformer.wpe.weight"] = np.concatenate([tensors["transformer.wpe.weight"]] * 8)  # 256 positions
    safetensors.numpy.save_file(tensors, "gpt2/model.safetensors", metadata={"format": "pt"})
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "llmscratch":
            code, _, err = run_cli(*argv[1:], *(["--quiet", "--sample-tokens", "0"] if argv[1] == "train" else []))
            assert code == 0, f"{command}: {err}"
        else:
            run = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, run.stderr
            assert run.stdout.startswith("ROMEO:")
    assert llmscratch.load("out-gpt2").model.config.block_size == 128


def test_chat_model_saved_for_transformers_chats_from_its_directory(tmp_path):
    """A GPT with the chat tokens, saved with save_hf: its tokenizer.json reads back with the chat tokens, so
    `llmscratch chat --checkpoint HF_DIR` runs (piped: one reply per line)."""
    import subprocess
    import sys

    from llmscratch.models import GPT, GPTConfig
    from llmscratch.tokenizers import CharTokenizer, ChatTokenizer

    tok = ChatTokenizer(CharTokenizer("ab \n"))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    out = llmscratch.save_hf(model, tmp_path / "hf", tokenizer=tok)
    assert isinstance(llmscratch.load(out).chat_tokenizer(), ChatTokenizer)
    run = subprocess.run(
        [sys.executable, "-m", "llmscratch", "chat", "--checkpoint", str(out), "--max-new-tokens", "4"],
        input="ab\nba\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr


def test_a_tokenizer_template_bos_starts_every_prompt(tmp_path, shakespeare):
    """Llama 3's tokenizer.json puts <|begin_of_text|> before each text: sample() prompts start with it, as
    transformers' tokenizer encodes them, and the tokens are transformers' greedy ones."""
    from llmscratch.tokenizers import BPETokenizer

    trained = BPETokenizer.train(shakespeare[:20000], 300, special_tokens=("<|begin_of_text|>", "<|end_of_text|>"))
    bpe = BPETokenizer(trained.merges, trained.pattern, trained.special_tokens, prefix=["<|begin_of_text|>"])
    torch.manual_seed(0)
    path = saved(llama(vocab=300, T=32, C=32, H=2, Hkv=1, F=24), tmp_path / "hf")
    bpe.to_huggingface().save(str(path / "tokenizer.json"))
    ck = llmscratch.load(path, dtype="float64")
    bos = trained.special_tokens["<|begin_of_text|>"]
    assert ck.tokenizer.prefix == (bos,) and load_tokenizer(path).to_dict() == bpe.to_dict()
    ref_tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    ids = ref_tok.encode("ROMEO:").ids
    assert ids[0] == bos and ids[1:] == bpe.encode("ROMEO:")
    hf = transformers.LlamaForCausalLM.from_pretrained(path).eval()
    float64_llama(hf)
    out = hf.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, pad_token_id=0)[0].tolist()
    assert ck.sample("ROMEO:", 10, temperature=0) == "ROMEO:" + bpe.decode(out[len(ids) :])
