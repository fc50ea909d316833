"""One training step (forward, backward, clip, AdamW) of nanoGPT's CPU model, ours and the PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest

from llmscratch.models import GPT
from llmscratch.training.config import resolve_config
from llmscratch.training.optimizer import AdamW, clip_grad_norm

CFG = resolve_config("shakespeare_char_cpu")


def batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, 65, (CFG.batch_size, CFG.block_size)), rng.integers(0, 65, (CFG.batch_size, CFG.block_size))


def test_train_step(benchmark, bk):
    cfg = resolve_config("shakespeare_char_cpu", backend=bk.name)
    model = GPT(cfg.model_config(65), bk, attention=cfg.attention, ops=cfg.ops)
    opt = AdamW(bk, model.params, 1e-3, (0.9, 0.99), weight_decay=0.1, update=model.op_set.adamw_update)
    x, y = (bk.from_numpy(a) for a in batch())

    def step():
        _, loss = model.forward(x, y)
        grads = model.backward()
        clip_grad_norm(bk, grads, 1.0)
        opt.step(grads, 1e-3)
        bk.item(loss)

    benchmark.extra_info.update(backend=bk.name, tokens_per_step=CFG.batch_size * CFG.block_size)
    benchmark.pedantic(step, rounds=20, warmup_rounds=3)


def test_train_step_pytorch_reference(benchmark):
    torch = pytest.importorskip("torch")
    from llmscratch.reference.torch_gpt import TorchGPT

    model = TorchGPT(CFG.model_config(65))
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99))
    x, y = (torch.from_numpy(a) for a in batch())

    def step():
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()

    benchmark.pedantic(step, rounds=20, warmup_rounds=3)
