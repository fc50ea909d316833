"""What every model shares: a backend, one ``Runtime`` for its layers, parameters made from its layers' specs.

A model's layers are a function of its config (``layers_for``), listed in parameter order; built without a
runtime they declare the parameter shapes (``specs_for``), built with the model's runtime they run. The
parameters are drawn from the layers' specs
(GPT-2's initialisation, on the host in float64, then cast, so every backend and dtype starts from the same
weights) or handed in (a checkpoint's), checked against the specs, and kept in that one fixed order: sums over
all parameters, such as the global gradient norm, then always add in the same order.
How it runs is chosen here, not in the config: ``attention`` (a kernel name, or "auto") and ``ops`` (an op
set, or "auto").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import ops
from ..backends import Backend, get_backend
from ..kernels import get_attention_kernel, get_ops, resolve_attention, resolve_ops
from ..layers import Runtime, Specs
from ..layers.lora import add_adapters, is_adapter, parse_targets
from ..util.errors import DataError, ShapeError
from .config import ModelConfig


def collect_specs(layers: list[Any]) -> Specs:
    return {name: spec for layer in layers for name, spec in layer.specs().items()}


def draw_params(specs: Specs, n_layer: int, bk: Backend, seed: int = 0) -> dict[str, Any]:
    """normal: N(0, 0.02²); residual projections: N(0, (0.02/√(2L))²); lora (a LoRA adapter's A (in, r)):
    U(-1/√in, 1/√in), as PEFT draws it; zeros; ones. One host generator."""
    rng = np.random.default_rng(seed)
    std = {"normal": 0.02, "residual": 0.02 / math.sqrt(2 * n_layer)}
    params = {}
    for name, (shape, init) in specs.items():
        if init in std:
            value = rng.standard_normal(shape) * std[init]
        elif init == "lora":
            bound = 1.0 / math.sqrt(shape[0])
            value = rng.uniform(-bound, bound, shape)
        else:
            value = np.full(shape, 1.0 if init == "ones" else 0.0)
        params[name] = bk.from_numpy(value)
    return params


class Model:
    kind: str = ""
    forward_call: str = ""  # the forward that backward() needs, named in its error

    def __init__(
        self,
        config: ModelConfig,
        backend: str | Backend = "numpy",
        seed: int = 0,
        params: dict[str, Any] | None = None,
        *,
        attention: str = "naive",
        ops: str = "array-api",
    ) -> None:
        if config.kind != self.kind:
            raise ShapeError(f"{type(self).__name__} needs a config of kind {self.kind!r}, got {config.kind!r}")
        self.config = config
        bk = get_backend(backend)
        kernel = get_attention_kernel(resolve_attention(attention, bk, config.block_size), bk)
        self.rt = Runtime(bk, kernel, get_ops(resolve_ops(ops, bk), bk), config.dropout, **position_tables(config, bk))
        layers = self.build_layers(config, self.rt)
        for name, layer in layers.items():
            setattr(self, name, layer)
        self.layers = list(layers.values())
        self.specs = collect_specs(self.layers)
        params = draw_params(self.specs, config.init_depth, bk, seed) if params is None else params
        self._check_params(params)
        self.rt.params = {name: params[name] for name in self.specs}
        self.rt.frozen = frozenset(self.specs) - set(trainable_names(config, self.specs))
        self.quantization: dict[str, Any] | None = None  # {"format", "group"} once quantized (quantized.py)
        self._dropout_rng = bk.generator(seed, 0x0D0)
        self._cache: Any = None

    @classmethod
    def specs_for(cls, config: ModelConfig) -> Specs:
        """name -> (shape, init) in creation order: the layers' declarations, no backend, kernel or weights."""
        return collect_specs(list(cls.build_layers(config, None).values()))

    @classmethod
    def build_layers(cls, config: ModelConfig, rt: Runtime | None) -> dict[str, Any]:
        """``layers_for``, with LoRA adapters added to the linear layers the config targets."""
        layers = cls.layers_for(config, rt)
        if config.lora:
            targets = parse_targets(config.lora_targets)
            add_adapters(list(layers.values()), config.lora_rank, config.lora_alpha, config.lora_dropout, targets)
        return layers

    @staticmethod
    def layers_for(config: ModelConfig, rt: Runtime | None) -> dict[str, Any]:
        """attribute name -> layer, in parameter order (each becomes an attribute of the model).
        rt None: declarations only (see ``specs_for``)."""
        raise NotImplementedError

    def _check_params(self, params: dict[str, Any]) -> None:
        missing = [n for n in self.specs if n not in params]
        extra = [n for n in params if n not in self.specs]
        if missing or extra:
            raise ShapeError(f"parameters do not match the config: missing {missing[:3]}, unexpected {extra[:3]}")
        for name, (shape, _) in self.specs.items():
            if tuple(params[name].shape) != shape:
                raise ShapeError(f"parameter {name} has shape {tuple(params[name].shape)}, the config needs {shape}")

    # ---- what runs it -------------------------------------------------------------------------------------

    @property
    def bk(self) -> Backend:
        return self.rt.bk

    @property
    def params(self) -> dict[str, Any]:
        return self.rt.params

    @property
    def kernel(self) -> Any:
        return self.rt.kernel

    @property
    def trainable(self) -> list[str]:
        """The parameters training updates, in parameter order: all of them, or a LoRA model's adapters (and
        a classifier's head)."""
        return [name for name in self.params if self.rt.learns(name)]

    @property
    def op_set(self) -> Any:
        return self.rt.op_set

    @property
    def training(self) -> bool:
        return self.rt.training

    @training.setter
    def training(self, value: bool) -> None:
        self.rt.training = value

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """``with model.eval_mode():`` dropout off inside; the training flag is put back afterwards."""
        was_training, self.training = self.training, False
        try:
            yield
        finally:
            self.training = was_training

    @contextmanager
    def adapters_off(self) -> Iterator[None]:
        """``with model.adapters_off():`` a LoRA model computes as its frozen base model inside (DPO's and RL's
        reference, with no second copy of the weights)."""
        self.rt.adapters_on = False
        try:
            yield
        finally:
            self.rt.adapters_on = True

    def as_ints(self, a: Any) -> Any:
        """Lists and NumPy arrays -> an int64 array on this backend; backend arrays as they are."""
        if isinstance(a, (list, tuple, np.ndarray)):
            return self.bk.from_numpy(np.asarray(a, dtype=np.int64))
        return a

    def as_ids(self, idx: Any) -> Any:
        """Token ids as a (B,T) int array on this backend (accepts lists and NumPy arrays)."""
        idx = self.as_ints(idx)
        if idx.ndim != 2:
            raise ShapeError(f"token ids must be (B, T), got shape {tuple(idx.shape)}")
        return idx

    def as_mask(self, mask: Any) -> Any:
        """A (B,T) key mask (True = a real token) on this backend, or None."""
        if mask is None or not isinstance(mask, (list, tuple, np.ndarray)):
            return mask
        return self.bk.from_numpy(np.asarray(mask, dtype=bool))

    def _loss_forward(self, logits: Any, targets: Any) -> tuple[Any, Any]:
        """-> (the cross-entropy of logits against targets, its cache); (None, None) without targets"""
        if targets is None:
            return None, None
        return self.op_set.cross_entropy_forward(self.bk, logits, self.as_ints(targets))

    def backward(self, dloss: float = 1.0, dlogits: Any = None) -> dict[str, Any]:
        """Gradients of ``dloss · loss`` from the last forward, one per trainable parameter, under the same
        names: the loss, the head, then the model's stacks in reverse (``_stacks_backward``). ``dlogits``:
        the gradient of a loss computed outside the model from the last forward's logits (a preference's, a
        reward's), in place of the model's own cross-entropy."""
        cache = self._cache
        if cache is None or (cache.loss is None and dlogits is None):
            raise RuntimeError(f"backward() needs a {self.forward_call} first")
        grads: dict[str, Any] = {}
        if dlogits is None:
            dlogits = self.op_set.cross_entropy_backward(self.bk, dloss, cache.loss)
        self._stacks_backward(self.head.backward(dlogits, cache.head, grads), cache, grads)
        self._cache = None
        return {name: grads[name] for name in self.trainable}  # in parameter order

    def _stacks_backward(self, dx: Any, cache: Any, grads: dict[str, Any]) -> None:
        """dx: the gradient at the head's input; walk the model's stacks back from there."""
        raise NotImplementedError

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the learned position tables, as nanoGPT reports."""
        return sum(
            math.prod(shape)
            for name, (shape, _) in self.specs.items()
            if not (non_embedding and name.endswith("wpe.weight"))
        )


def trainable_names(config: ModelConfig, specs: Specs) -> list[str]:
    """The parameters a model of ``config`` trains: every one, or with LoRA the adapters and a classifier's
    head (which a pretrained encoder rarely has for the task: PEFT trains it too)."""
    if not config.lora:
        return list(specs)
    return [n for n in specs if is_adapter(n) or n.startswith("classifier.")]


def init_params(config: ModelConfig, bk: Backend, seed: int = 0) -> dict[str, Any]:
    """The parameters a model of ``config`` starts from (the same on every backend and dtype)."""
    from . import model_class

    return draw_params(model_class(config.kind).specs_for(config), config.init_depth, bk, seed)


def position_tables(cfg: ModelConfig, bk: Backend) -> dict[str, Any]:
    """The fixed tables a model's positions need, computed once and shared by all its layers: RoPE's cos/sin
    (pos="rope") or the sinusoidal table (pos="sinusoidal"); none for learned positions."""
    if cfg.pos == "rope":
        return {"rope": ops.rope_tables(bk, cfg.block_size, cfg.head_dim, base=cfg.rope_base, **cfg.rope_scaling)}
    if cfg.pos == "sinusoidal":
        return {"sinusoid": ops.sinusoidal_table(bk, cfg.block_size, cfg.n_embd)}
    return {}


def check_length(cfg: ModelConfig, length: int, what: str = "a sequence") -> None:
    if length > cfg.block_size:
        raise DataError(
            f"{what} of {length} tokens is longer than the model's context (block_size={cfg.block_size}); "
            "crop the input or train with a larger block_size"
        )


def record_attention(model: Model, run: Any) -> dict[str, np.ndarray]:
    """Run ``run()`` in eval mode with every attention layer storing its probabilities; -> {layer name:
    (H,T,S)} for the first sequence, on the host."""
    rt = model.rt
    rt.attention_maps = {}
    try:
        with model.eval_mode():
            run()
        maps = rt.attention_maps
    finally:
        rt.attention_maps, model._cache = None, None
    return {name: model.bk.to_numpy(p[0]) for name, p in maps.items()}
