"""DPO: the loss and its gradient through the summed reply log-probabilities against torch autograd on the
same model, the reference (a frozen copy, or a LoRA model's adapters off), training, exact resume, eval on a
preference file, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_backend, rel_err, tiny
from op_cases import IGNORE, torch_dpo, torch_token_logprob

import llmscratch
from llmscratch.cli import main
from llmscratch.data.files import read_preferences
from llmscratch.models import GPT, GPTConfig
from llmscratch.tasks import task_class
from llmscratch.tasks.dpo import logprobs, reference_logprobs
from llmscratch.training.config import TrainConfig
from llmscratch.util.errors import DataError

torch = pytest.importorskip("torch")

CFG = GPTConfig(vocab_size=11, n_layer=2, n_head=2, n_embd=8, block_size=8, bias=True)


def pair_batch() -> dict[str, np.ndarray]:
    """2 pairs = 4 rows (chosen, chosen, rejected, rejected); the prompts' positions are not targets."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 11, (4, 7))
    targets = rng.integers(0, 11, (4, 7))
    targets[:, :3] = IGNORE
    targets[1, :5] = IGNORE
    return {"idx": idx, "targets": targets}


def perturbed(params: dict, scale: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {n: p + rng.standard_normal(p.shape) * scale for n, p in params.items()}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_and_gradients_match_torch_autograd(smoothing):
    """task.loss + task.backward on a GPT against the same DPO formula in torch autograd on the same weights
    (nanoGPT-style torch GPT), with a reference model of other weights: loss and every gradient ≤ 1e-10."""
    from llmscratch.reference.torch_gpt import TorchGPT

    bk = make_backend("numpy", "float64")
    start = GPT(CFG, bk, seed=1).params
    policy_params = {n: bk.to_numpy(p) for n, p in start.items()}
    reference_params = perturbed(policy_params, 0.05, 2)
    policy = GPT(CFG, bk, params={n: bk.from_numpy(p) for n, p in policy_params.items()})
    task = task_class("dpo")(TrainConfig(task="dpo", dpo_beta=0.5, dpo_smoothing=smoothing))
    task.reference = GPT(CFG, bk, params={n: bk.from_numpy(p) for n, p in reference_params.items()})
    batch = pair_batch()
    loss = task.loss(policy, batch, None)
    grads = task.backward(policy, 1.0)

    theirs = TorchGPT.from_params(CFG, policy_params, dtype=torch.float64)
    reference = TorchGPT.from_params(CFG, reference_params, dtype=torch.float64)
    idx, targets = torch.tensor(batch["idx"]), torch.tensor(batch["targets"])
    logp = torch_token_logprob(torch, theirs(idx)[0], targets).sum(-1)
    with torch.no_grad():
        ref = torch_token_logprob(torch, reference(idx)[0], targets).sum(-1)
    expected = torch_dpo(torch, logp[:2], logp[2:], ref[:2], ref[2:], 0.5, smoothing)
    expected.backward()
    assert abs(float(loss) - expected.item()) <= 1e-10
    for name, g in theirs.grads_as_ours().items():
        assert rel_err(bk.to_numpy(grads[name]), g) <= 1e-10, name


def test_a_lora_models_reference_is_its_base_with_the_adapters_off():
    """With LoRA there is no second model: the reference log-probabilities are the base model's, and at the
    start (B = 0) the loss is log 2 with a zero margin."""
    bk = make_backend("numpy", "float64")
    base = GPT(CFG, bk, seed=1)
    lora_cfg = GPTConfig(**(CFG.to_dict() | {"lora_rank": 2}))
    params = dict(base.params) | {n: p for n, p in GPT(lora_cfg, bk, seed=1).params.items() if "lora" in n}
    model = GPT(lora_cfg, bk, params=params)
    batch = pair_batch()
    ref = reference_logprobs(model, None, model.as_ids(batch["idx"]), batch["targets"])
    with base.eval_mode():
        expected = logprobs(base, base.as_ids(batch["idx"]), batch["targets"])[0]
    np.testing.assert_array_equal(ref, expected)
    task = task_class("dpo")(TrainConfig(task="dpo"))
    assert abs(float(task.loss(model, batch, None)) - np.log(2)) <= 1e-12


def write_preferences(path, n=60):
    """Prompts "a+b=" with the right sum chosen and a near miss rejected."""
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(n):
        a, b = rng.integers(0, 10, 2)
        wrong = a + b + rng.choice([d for d in (-2, -1, 1, 2) if a + b + d >= 0])
        lines.append({"prompt": f"{a}+{b}=", "chosen": f"{a + b}.", "rejected": f"{wrong}."})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize("lora", [False, True])
def test_training_separates_the_rewards_and_resumes_exactly(tmp_path, lora):
    """From a pretrained checkpoint: the loss starts at log 2 (the policy is its reference) and falls; a resumed
    run repeats the uninterrupted one bit for bit (its reference included)."""
    data = write_preferences(tmp_path / "p.jsonl")
    (tmp_path / "t.txt").write_text("".join(f"{a}+{b}={a + b}.\n" for a in range(10) for b in range(10)) * 3)
    base = str(tmp_path / "base")
    llmscratch.train(data=str(tmp_path / "t.txt"), out_dir=base, max_iters=30, progress=False, **tiny())
    opts = dict(
        task="dpo",
        data=str(data),
        init_from=base,
        learning_rate=1e-2,
        warmup_iters=0,
        eval_interval=20,
        lr_decay_iters=40,
        dpo_beta=0.5,
        progress=False,
        batch_size=8,
    )
    if lora:
        opts |= dict(lora_rank=4, lora_targets="q,k,v,o,up,down")
    whole = llmscratch.train(max_iters=40, out_dir=str(tmp_path / "whole"), **opts)
    last = whole.history[-1]
    assert whole.history[0]["eval_train_loss"] == pytest.approx(np.log(2), abs=1e-6)  # the policy is the reference
    assert last["eval_train_loss"] < np.log(2) - 0.02
    llmscratch.train(max_iters=20, out_dir=str(tmp_path / "split"), **opts)
    second = llmscratch.train(max_iters=40, out_dir=str(tmp_path / "split"), resume=True, **opts)
    for name, p in whole.model.params.items():
        np.testing.assert_array_equal(p, second.model.params[name])
    assert [h["train_loss"] for h in second.history] == [h["train_loss"] for h in whole.history]


def test_eval_reports_reward_accuracy_for_a_preference_file_on_any_checkpoint(tmp_path, capsys):
    """A language model's checkpoint, evaluated on a preference file: the fraction of pairs whose chosen reply
    it finds more likely (no reference: rewards are β log π)."""
    data = write_preferences(tmp_path / "p.jsonl", n=20)
    (tmp_path / "t.txt").write_text("".join(f"{a}+{b}={a + b}.\n" for a in range(10) for b in range(10)))
    out = str(tmp_path / "lm")
    llmscratch.train(data=str(tmp_path / "t.txt"), out_dir=out, max_iters=2, progress=False, **tiny())
    capsys.readouterr()
    assert main(["eval", "--checkpoint", out, "--data", str(data)]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert set(printed) == {"reward_accuracy", "chosen_reward", "rejected_reward", "margin", "val_loss"}
    ck = llmscratch.load(out)
    scores = ck.evaluate(str(data))
    with ck.model.eval_mode():
        task = task_class("dpo")(TrainConfig(task="dpo", data=str(data)), ck.tokenizer)
        pairs = task.encode(read_preferences(data), str(data))
        batch = task._arrays(pairs)
        logp = logprobs(ck.model, ck.model.as_ids(batch["idx"]), batch["targets"])[0].sum(axis=1)
    assert scores["reward_accuracy"] == float(np.mean(logp[:20] > logp[20:]))


@pytest.mark.parametrize(
    "line, message",
    [
        ({"prompt": "1+1=", "rejected": "3"}, "p.jsonl:2: the line has no 'chosen'"),
        ({"prompt": "1+1=", "chosen": "2", "rejected": "2"}, "p.jsonl:2: 'chosen' and 'rejected' are the same reply"),
        ({"prompt": 7, "chosen": "2", "rejected": "3"}, "p.jsonl:2: 'prompt' must be a string or a list of chat"),
        ({"prompt": "1+1=", "chosen": ["2"], "rejected": "3"}, "p.jsonl:2: 'chosen' must be a string, got list"),
    ],
)
def test_bad_preference_lines_are_one_line_errors_naming_file_and_line(tmp_path, line, message):
    good = {"prompt": "1+2=", "chosen": "3", "rejected": "4"}
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in (good, line, good)) + "\n")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace("+", r"\+")):
        read_preferences(path)
