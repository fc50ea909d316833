"""LoRA: adapter gradients against finite differences and PEFT's autograd, PEFT's files both ways, merging,
frozen weights that get no gradient and do not move, every task and backend, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_MODEL, make_backend, rel_err, tiny
from test_hf_interop import float64_llama
from test_tasks import write_classification, write_pairs

import llmscratch
from llmscratch import ops
from llmscratch.cli import main
from llmscratch.layers.lora import is_adapter
from llmscratch.models import ModelConfig, model_class
from llmscratch.util.errors import ConfigError

torch = pytest.importorskip("torch")

KINDS = {
    "gpt": dict(kind="gpt", vocab_size=13),
    "encoder": dict(kind="encoder", vocab_size=13, n_classes=3, pooling="mean"),
    "seq2seq": dict(kind="seq2seq", vocab_size=13, src_vocab_size=11),
}
ALL_ATTENTION_AND_MLP = "q,k,v,o,up,down"


def lora_model(kind: str, backend: str = "numpy", dtype: str = "float64", **arch):
    """A tiny LoRA model of ``kind`` whose adapters are all nonzero (B drawn, not zeros), so they matter."""
    sizes = dict(n_layer=2, n_head=2, n_embd=8, block_size=8, lora_rank=2, lora_targets=ALL_ATTENTION_AND_MLP)
    cfg = ModelConfig(**(KINDS[kind] | sizes | arch))
    model = model_class(kind)(cfg, make_backend("numpy", dtype), seed=3)
    rng = np.random.default_rng(4)
    params = {n: model.bk.to_numpy(p) for n, p in model.params.items()}
    params |= {n: rng.standard_normal(p.shape) * 0.3 for n, p in params.items() if n.endswith("lora_B")}
    bk = make_backend(backend, dtype)
    return model_class(kind)(cfg, bk, params={n: bk.from_numpy(p) for n, p in params.items()})


def batch(kind: str, B: int = 2, T: int = 6) -> dict:
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 11, (B, T))
    if kind == "gpt":
        return dict(idx=ids, targets=rng.integers(0, 13, (B, T)))
    if kind == "encoder":
        return dict(idx=ids, labels=rng.integers(0, 3, (B,)))
    return dict(src=ids, tgt=rng.integers(0, 13, (B, T - 1)), targets=rng.integers(0, 13, (B, T - 1)))


def loss_and_grads(model, kind: str) -> tuple[float, dict]:
    _, loss = model.forward(**{k: model.as_ints(v) for k, v in batch(kind).items()})
    return float(model.bk.to_numpy(loss)), {n: model.bk.to_numpy(g) for n, g in model.backward().items()}


# ---- the gradients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_adapter_gradients_match_finite_differences(kind):
    """Every adapter's dA and dB in a whole model (cross-attention's included) against central differences
    of the loss at a few entries each (float64)."""
    model = lora_model(kind)
    _, grads = loss_and_grads(model, kind)
    assert set(grads) == set(model.trainable)
    rng = np.random.default_rng(6)
    eps = 1e-6
    for name, g in grads.items():
        if not is_adapter(name):
            continue
        for flat in rng.choice(g.size, size=min(3, g.size), replace=False):
            i = np.unravel_index(flat, g.shape)
            values = []
            for sign in (1.0, -1.0):
                p = model.bk.to_numpy(model.params[name]).copy()
                p[i] += sign * eps
                model.params[name] = model.bk.from_numpy(p)
                values.append(loss_and_grads(model, kind)[0])
                p[i] -= sign * eps
                model.params[name] = model.bk.from_numpy(p)
            numeric = (values[0] - values[1]) / (2 * eps)
            assert abs(g[i] - numeric) <= 1e-6 * max(1.0, abs(numeric)), f"{name}{i}: {g[i]} vs {numeric}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_merged_equals_unmerged(kind):
    model = lora_model(kind)
    args = {k: model.as_ints(v) for k, v in batch(kind).items() if k not in ("targets", "labels")}
    before = model.bk.to_numpy(model.forward(**args)[0])
    llmscratch.merge_lora(model)
    assert not model.config.lora and not any(is_adapter(n) for n in model.params)
    assert model.trainable == list(model.params)
    np.testing.assert_allclose(model.bk.to_numpy(model.forward(**args)[0]), before, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="no LoRA adapters to merge"):
        llmscratch.merge_lora(model)


def test_frozen_weights_get_no_gradient_computed(monkeypatch):
    """A LoRA model's backward never computes a frozen weight's gradient: every linear product skips dW
    (the LM head's too), and no embedding gradient is ever made."""
    model = lora_model("gpt")
    calls = []
    real = ops.linear_backward
    monkeypatch.setattr(
        ops, "linear_backward", lambda *a, **k: calls.append(k.get("param_grads", True)) or real(*a, **k)
    )
    monkeypatch.setattr(ops, "embedding_backward", lambda *a, **k: pytest.fail("an embedding gradient was computed"))
    _, grads = loss_and_grads(model, "gpt")
    assert calls and not any(calls), "a frozen weight's dW was computed"
    assert all(is_adapter(n) for n in grads) and len(grads) == 2 * 6 * 2


def test_every_backend_computes_the_same(backend_id):
    """The LoRA model's loss and adapter gradients on each backend equal numpy's (float64)."""
    ref_loss, ref = loss_and_grads(lora_model("gpt", "numpy"), "gpt")
    loss, grads = loss_and_grads(lora_model("gpt", backend_id), "gpt")
    assert abs(loss - ref_loss) <= 1e-12
    for name, g in ref.items():
        assert rel_err(grads[name], g) <= 1e-10, name


# ---- PEFT ---------------------------------------------------------------------------------------------

PEFT_SHAPES = {
    "gpt2": dict(bias=True),  # GPT-2: q, k, v share c_attn (written as one block adapter)
    "llama": dict(pos="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1, tie_embeddings=False),
}


@pytest.mark.parametrize("family", list(PEFT_SHAPES))
def test_matches_peft_logits_and_gradients(tmp_path, family):
    """save_hf of a LoRA model: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(d), d) gives
    our logits (≤ 1e-10), and autograd's gradients of its lora_A and lora_B equal ours (≤ 1e-9)."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    targets = "q,v,o,gate,down" if family == "llama" else "q,v,o,down"
    model = lora_model("gpt", lora_targets=targets, **PEFT_SHAPES[family])
    llmscratch.save_hf(model, tmp_path / "hf")
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float64)
    if family == "llama":
        float64_llama(base)
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "hf", is_trainable=True)
    b = batch("gpt")
    logits = theirs(torch.tensor(b["idx"])).logits
    torch.nn.functional.cross_entropy(logits.reshape(-1, 13), torch.tensor(b["targets"]).reshape(-1)).backward()
    ours, _ = model.forward(model.as_ints(b["idx"]))
    assert rel_err(logits.detach().numpy(), model.bk.to_numpy(ours)) <= 1e-10
    _, grads = loss_and_grads(model, "gpt")
    written = json.loads((tmp_path / "hf" / "adapter_config.json").read_text())
    block = set(written["rank_pattern"])  # modules holding several of our adapters
    checked = 0
    for name, p in theirs.named_parameters():
        if "lora_" not in name:
            continue
        module = name.split("base_model.model.")[1].split(".lora_")[0]
        ours_A = [g for n, g in grads.items() if n.endswith("lora_A") and _module_of(n, family) == module]
        ours_B = [g for n, g in grads.items() if n.endswith("lora_B") and _module_of(n, family) == module]
        if ".lora_A." in name:
            expected = np.concatenate(ours_A, axis=1).T  # (R, in)
            assert rel_err(p.grad.numpy(), expected) <= 1e-9, name
        elif module not in block:
            assert rel_err(p.grad.numpy(), ours_B[0].T) <= 1e-9, name
        else:  # the block-diagonal B (3C, 2r) of c_attn: q's block, then v's
            r, C = model.config.lora_rank, model.config.n_embd
            g = p.grad.numpy()
            assert rel_err(g[:C, :r], ours_B[0].T) <= 1e-9 and rel_err(g[2 * C :, r:], ours_B[1].T) <= 1e-9, name
        checked += 1
    assert checked == 2 * len(written["target_modules"])


def _module_of(ours: str, family: str) -> str:
    """Our adapter's name -> the Hugging Face module it is written to."""
    linear, part, _ = ours.rsplit(".", 2)
    if family == "gpt2":
        return linear
    layer = linear.split(".")[2]
    where = {"q": "self_attn.q_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"}
    where |= {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    return f"model.layers.{layer}.{where[part]}"


@pytest.mark.parametrize("family", list(PEFT_SHAPES))
def test_roundtrip_and_merged_export(tmp_path, family):
    """load of our PEFT directory gives the same LoRA model back; save_hf(merge=True) and convert
    --merge-lora give a plain directory that transformers loads with the same logits."""
    transformers = pytest.importorskip("transformers")
    model = lora_model("gpt", lora_targets="q,v,down", **PEFT_SHAPES[family])
    llmscratch.save_hf(model, tmp_path / "lora")
    back = llmscratch.load(tmp_path / "lora", dtype="float64").model
    assert (back.config.lora_rank, back.config.lora_targets) == (2, "q,v,down")
    for name, p in model.params.items():
        np.testing.assert_array_equal(back.bk.to_numpy(back.params[name]), model.bk.to_numpy(p))
    idx = batch("gpt")["idx"]
    ours = model.bk.to_numpy(model.forward(model.as_ints(idx))[0])
    llmscratch.save_hf(model, tmp_path / "merged", merge=True)
    assert model.config.lora  # save_hf(merge=True) leaves the model as it was
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float64)
    if family == "llama":
        float64_llama(plain)
    assert rel_err(plain(torch.tensor(idx)).logits.detach().numpy(), ours) <= 1e-10


def test_reads_an_adapter_peft_wrote(tmp_path):
    """An adapter directory written by PEFT itself (GPT-2's whole c_attn, and c_proj, which is both o and
    down), pointing at a local base model: load gives PEFT's logits."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    cfg = transformers.GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=2, n_head=2)
    torch.manual_seed(0)
    base = transformers.GPT2LMHeadModel(cfg).double().eval()
    base.save_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(r=3, lora_alpha=6, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    theirs = peft.get_peft_model(base, lora)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_()
    theirs.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "config.json").unlink(missing_ok=True)
    settings = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = str(tmp_path / "base")
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(settings))
    model = llmscratch.load(tmp_path / "adapter", dtype="float64").model
    assert (model.config.lora_rank, model.config.lora_targets) == (3, "q,k,v,o,down")
    idx = batch("gpt")["idx"]
    expected = theirs(torch.tensor(idx)).logits.detach().numpy()
    assert rel_err(model.bk.to_numpy(model.forward(model.as_ints(idx))[0]), expected) <= 1e-10


# ---- training ------------------------------------------------------------------------------------------


def pretrained(tmp_path, **values) -> str:
    out = str(tmp_path / "base")
    llmscratch.train(max_iters=4, eval_interval=4, eval_iters=1, out_dir=out, progress=False, **tiny(**values))
    return out


@pytest.mark.parametrize("backend, precision", [("numpy", "fp32"), ("torch", "bf16")])
def test_training_moves_only_the_adapters_and_resumes_exactly(tmp_path, backend, precision):
    """init_from + lora_rank: the base weights stay bit-identical, the optimizer holds state for the adapters
    alone, the loss falls, and a resumed run repeats the uninterrupted one bit for bit."""
    base = pretrained(tmp_path)
    opts = dict(
        tiny(init_from=base, lora_rank=4, lora_targets="q,k,v,o,up,down", lora_dropout=0.1, learning_rate=1e-2),
        backend=backend,
        precision=precision,
        eval_interval=4,
        eval_iters=2,
        lr_decay_iters=8,
        gradient_accumulation_steps=2,
        progress=False,
    )
    whole = llmscratch.train(max_iters=8, out_dir=str(tmp_path / "whole"), **opts)
    frozen = llmscratch.load(base, backend="numpy").model
    model = whole.model
    ck = llmscratch.load(tmp_path / "whole", backend="numpy")  # the weights training kept (fp32 masters in bf16)
    for name, p in frozen.params.items():
        np.testing.assert_array_equal(ck.model.params[name], p, err_msg=name)
    assert {k.split(".", 1)[1] for k in ck.optimizer_arrays} == set(model.trainable)
    assert model.trainable and all(is_adapter(n) for n in model.trainable)
    assert all(np.any(model.bk.to_numpy(model.params[n]) != 0) for n in model.trainable if n.endswith("lora_B"))
    llmscratch.train(max_iters=4, out_dir=str(tmp_path / "split"), **opts)
    second = llmscratch.train(max_iters=8, out_dir=str(tmp_path / "split"), resume=True, **opts)
    for name, p in model.params.items():
        np.testing.assert_array_equal(model.bk.to_numpy(p), second.model.bk.to_numpy(second.model.params[name]))


@pytest.mark.parametrize("task", ["classify", "seq2seq"])
def test_every_task_trains_adapters(tmp_path, task):
    """classify (its classifier layer trains beside the adapters, as PEFT's modules_to_save) and seq2seq
    (cross-attention's q, k, v adapted too)."""
    data = write_classification(tmp_path / "d.csv") if task == "classify" else write_pairs(tmp_path / "d.tsv")
    opts = dict(TINY_MODEL, task=task, data=str(data), eval_interval=6, progress=False)
    base = str(tmp_path / "base")
    llmscratch.train(max_iters=6, out_dir=base, **opts)
    tuned = llmscratch.train(max_iters=6, init_from=base, lora_rank=2, lora_targets="q,k,v", **opts)
    trainable = tuned.model.trainable
    assert any(n.startswith("classifier.") for n in trainable) == (task == "classify")
    assert any(".cross_attn." in n for n in trainable) == (task == "seq2seq")
    frozen = llmscratch.load(base).model
    for name, p in frozen.params.items():
        if name not in trainable:
            np.testing.assert_array_equal(tuned.model.params[name], p, err_msg=name)


def test_memory_estimate_counts_gradients_and_moments_of_the_adapters_only():
    from llmscratch.training.memory import estimate_training_memory

    bk = make_backend("numpy", "float32")
    full = ModelConfig(vocab_size=65, n_layer=4, n_embd=128, n_head=4, block_size=64)
    lora = ModelConfig(**(full.to_dict() | {"lora_rank": 8}))
    ratio = (
        estimate_training_memory(full, 12, 1, bk, False).parameters
        / estimate_training_memory(lora, 12, 1, bk, False).parameters
    )
    assert ratio > 3.5


# ---- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lora-rank", "0"], "lora_rank must be a positive integer (the adapters' rank, e.g. 8), got 0"),
        (["--lora-rank", "4", "--lora-targets", "q,qq"], "unknown LoRA target 'qq' (did you mean 'q'?)"),
        (["--lora-rank", "4", "--lora-targets", "gate"], "LoRA target 'gate' names no layer of this model"),
        (["--lora-rank", "4", "--lora-targets", ","], "lora_targets names no projection"),
    ],
)
def test_bad_lora_settings_are_one_line_errors(tmp_path, capsys, flags, message):
    argv = ["train", "--max-iters", "1", "--out", str(tmp_path / "run"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_init_from_a_lora_model_keeps_its_adapters(tmp_path):
    """Fine-tuning a LoRA checkpoint again continues its adapters; other LoRA settings are refused."""
    base = pretrained(tmp_path)
    first = str(tmp_path / "first")
    llmscratch.train(max_iters=2, init_from=base, lora_rank=2, out_dir=first, progress=False, **tiny())
    again = llmscratch.train(max_iters=2, init_from=first, progress=False, **tiny())
    assert again.model.config.lora_rank == 2
    with pytest.raises(ConfigError, match=r"drop lora_rank=4 \(it has 2\)"):
        llmscratch.train(max_iters=2, init_from=first, lora_rank=4, progress=False, **tiny())
