"""RL from verifiable rewards: the policy-gradient loss and its gradient against torch autograd on fixed
replies and rewards, the rewards, group advantages, a step with nothing to learn, exact resume, a Python
reward, eval of a prompt file on any checkpoint, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_backend, rel_err, tiny
from op_cases import IGNORE, torch_policy_gradient, torch_token_logprob

import llmscratch
from llmscratch.cli import main
from llmscratch.data.files import read_rl_prompts
from llmscratch.models import GPT, GPTConfig
from llmscratch.tasks import task_class
from llmscratch.tasks.rewards import reward_function
from llmscratch.training.config import TrainConfig
from llmscratch.util.errors import ConfigError, DataError

torch = pytest.importorskip("torch")

CFG = GPTConfig(vocab_size=11, n_layer=2, n_head=2, n_embd=8, block_size=8, bias=True)


def test_loss_and_gradients_match_torch_autograd():
    """task.loss + task.backward on fixed sampled replies and advantages, with the KL penalty to a reference of
    other weights, against the same formula in torch autograd on the same weights: loss and every gradient
    ≤ 1e-10."""
    from llmscratch.reference.torch_gpt import TorchGPT

    bk = make_backend("numpy", "float64")
    policy_params = {n: bk.to_numpy(p) for n, p in GPT(CFG, bk, seed=1).params.items()}
    rng = np.random.default_rng(2)
    reference_params = {n: p + rng.standard_normal(p.shape) * 0.05 for n, p in policy_params.items()}
    policy = GPT(CFG, bk, params={n: bk.from_numpy(p) for n, p in policy_params.items()})
    task = task_class("rl")(TrainConfig(task="rl", rl_kl=0.2))
    task.reference = GPT(CFG, bk, params={n: bk.from_numpy(p) for n, p in reference_params.items()})
    idx = rng.integers(0, 11, (4, 7))
    targets = rng.integers(0, 11, (4, 7))
    targets[:, :3] = IGNORE  # the prompts
    targets[2, :] = IGNORE  # a reply without advantage
    batch = {"idx": idx, "targets": targets, "advantages": np.array([1.2, -0.4, 0.0, -0.8])}
    loss = task.loss(policy, batch, None)
    grads = task.backward(policy, 1.0)

    theirs = TorchGPT.from_params(CFG, policy_params, dtype=torch.float64)
    reference = TorchGPT.from_params(CFG, reference_params, dtype=torch.float64)
    t_idx, t_targets = torch.tensor(idx), torch.tensor(targets)
    logp = torch_token_logprob(torch, theirs(t_idx)[0], t_targets)
    with torch.no_grad():
        ref = torch_token_logprob(torch, reference(t_idx)[0], t_targets)
    mask = (t_targets != IGNORE).double()
    expected = torch_policy_gradient(torch, logp, torch.tensor(batch["advantages"]), mask, ref, 0.2)
    expected.backward()
    assert abs(float(loss) - expected.item()) <= 1e-10
    for name, g in theirs.grads_as_ours().items():
        assert rel_err(bk.to_numpy(grads[name]), g) <= 1e-10, name


@pytest.mark.parametrize(
    "spec, reply, answer, expected",
    [
        ("exact", "  Twelve  Apples ", "twelve apples", 1.0),
        ("exact", "12 apples", "12", 0.0),
        ("number", "it is 7, no, 12.0", "12", 1.0),
        ("number", "12 or 7", "12", 0.0),
        ("number", "none", "12", 0.0),
        ("number", "-3", "-3", 1.0),
        ("regex:^[0-9]+$", "123", "", 1.0),
        ("regex:^[0-9]+$", "12a", "", 0.0),
    ],
)
def test_rewards(spec, reply, answer, expected):
    assert reward_function(spec)("prompt", reply, answer) == expected


def test_advantages_are_relative_to_the_group():
    task = task_class("rl")(TrainConfig(task="rl", rl_group=3))
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    centred = task_class("rl")(TrainConfig(task="rl", rl_group=3, rl_normalize=False)).advantages(rewards)
    np.testing.assert_allclose(centred, [2 / 3, -1 / 3, -1 / 3, 0, 0, 0])
    normalized = task.advantages(rewards)
    np.testing.assert_allclose(normalized[:3], centred[:3] / (np.std([1.0, 0.0, 0.0]) + 1e-6))
    assert not normalized[3:].any()


def write_prompts(path, n=40):
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in rng.integers(0, 10, (n, 2))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def pretrained(tmp_path) -> str:
    (tmp_path / "t.txt").write_text("".join(f"{a}+{b}={a + b}\n" for a in range(10) for b in range(10)) * 3)
    base = str(tmp_path / "base")
    llmscratch.train(data=str(tmp_path / "t.txt"), out_dir=base, max_iters=20, progress=False, **tiny())
    return base


RL = dict(task="rl", rl_group=4, rl_max_new_tokens=3, reward="number", eval_interval=4, progress=False)


def test_a_step_whose_rewards_are_all_equal_changes_nothing(tmp_path):
    """Every reply matches: every advantage is 0, no reply token is a target, and the weights stay as they
    were, weight decay included."""
    data, base = write_prompts(tmp_path / "p.jsonl"), pretrained(tmp_path)
    opts = dict(RL, reward="regex:.*", weight_decay=0.1, learning_rate=1e-2, warmup_iters=0)
    run = llmscratch.train(data=str(data), init_from=base, max_iters=3, **tiny(**opts))
    start = llmscratch.load(base).model
    for name, p in start.params.items():
        np.testing.assert_array_equal(run.model.params[name], p)


def test_training_resumes_exactly_and_reports_its_metrics(tmp_path):
    """The replies are sampled from the model being trained, seeded by the step: a resumed run samples the
    same ones and ends bit for bit where the uninterrupted run does (with the KL penalty's reference)."""
    data, base = write_prompts(tmp_path / "p.jsonl"), pretrained(tmp_path)
    opts = tiny(**RL, init_from=base, rl_kl=0.05, learning_rate=1e-2, warmup_iters=0, lr_decay_iters=8, dropout=0.1)
    whole = llmscratch.train(data=str(data), max_iters=8, out_dir=str(tmp_path / "whole"), **opts)
    assert {"accuracy", "mean_reward", "reply_length"} <= set(whole.history[-1])
    llmscratch.train(data=str(data), max_iters=4, out_dir=str(tmp_path / "split"), **opts)
    second = llmscratch.train(data=str(data), max_iters=8, out_dir=str(tmp_path / "split"), resume=True, **opts)
    for name, p in whole.model.params.items():
        np.testing.assert_array_equal(p, second.model.params[name])
    assert [h["train_loss"] for h in second.history] == [h["train_loss"] for h in whole.history]


def test_a_python_function_is_a_reward(tmp_path):
    data, base = write_prompts(tmp_path / "p.jsonl", n=10), pretrained(tmp_path)
    seen = []

    def odd_length(prompt, reply, answer):
        seen.append((prompt, reply, answer))
        return float(len(reply) % 2)

    llmscratch.train(data=str(data), init_from=base, max_iters=1, **tiny(**RL | {"reward": odd_length}))
    assert seen and all(p.endswith("=") and a.isdigit() for p, _, a in seen)


def test_eval_reports_accuracy_for_a_prompt_file_on_any_checkpoint(tmp_path, capsys):
    """A language model's checkpoint, evaluated on an RL prompt file: greedy replies, scored by the config's
    reward (exact by default)."""
    data, base = write_prompts(tmp_path / "p.jsonl", n=12), pretrained(tmp_path)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", base, "--data", str(data)]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert set(printed) == {"accuracy", "mean_reward", "reply_length"}
    assert 0 <= float(printed["accuracy"]) <= 1 and float(printed["reply_length"]) > 0


def test_bad_rl_input_is_one_line_errors(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2="}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: the line has no 'answer'"):
        read_rl_prompts(path)
    with pytest.raises(ConfigError, match=r"unknown reward 'numbr' \(did you mean 'number'\?\)"):
        TrainConfig(task="rl", reward="numbr")
    with pytest.raises(ConfigError, match="the pattern does not compile"):
        TrainConfig(task="rl", reward="regex:(")
    assert main(["train", "--task", "rl", "--reward", "numbr", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown reward 'numbr'" in err and len(err.splitlines()) == 1
