"""A decoder-only transformer (the GPT-2 family), built only from the handwritten ops.

Legend: B batch, T time, C channels (n_embd), V vocab, H heads, Hkv kv heads, D head dim, F MLP width, L layers.

    x = wte[idx] + pos                                              (B,T,C)
    for each of the L blocks:
        x = x + drop(attn(ln_1(x)))
        x = x + drop(mlp(ln_2(x)))
    logits = ln_f(x) @ wteᵀ                                         (B,T,V)
    loss = cross_entropy(logits, targets)

``backward()`` walks the same lines in reverse, and every parameter gradient lands in a dict under the
parameter's own name. Names and layouts are GPT-2's as Hugging Face stores them (Conv1D weights (in, out),
a fused c_attn), so GPT-2 weights load with no translation at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .. import ops
from ..backends import Backend, get_backend
from ..errors import ConfigError, DataError, ShapeError, did_you_mean
from ..kernels import OpSet, get_attention_kernel, get_ops
from .kv_cache import KVCache

POSITIONS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_exact", "relu", "swiglu")


def activation(mlp: str, op_set: OpSet) -> tuple[Any, Any]:
    """mlp option -> (forward, backward) of its activation; GELU comes from the model's op set."""
    if mlp in ("gelu", "gelu_exact"):
        form = "tanh" if mlp == "gelu" else "exact"
        return (lambda bk, h: op_set.gelu_forward(bk, h, form)), op_set.gelu_backward
    if mlp == "relu":
        return ops.relu_forward, ops.relu_backward
    return ops.swiglu_forward, ops.swiglu_backward


@dataclass
class GPTConfig:
    """The model's shape and options (field names follow nanoGPT and Hugging Face's GPT2Config)."""

    vocab_size: int = 65
    block_size: int = 256  # the longest sequence (context) the model sees
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None  # None: = n_head; fewer gives grouped-query attention
    n_embd: int = 384
    n_inner: int | None = None  # MLP width F; None: 4·n_embd
    dropout: float = 0.0
    bias: bool = True  # biases in the linear layers and layernorms
    tie_embeddings: bool = True  # the output head reuses wte
    pos: str = "learned"  # learned | sinusoidal | rope
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu (tanh form, GPT-2's) | gelu_exact | relu | swiglu
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    attention: str = "naive"  # attention kernel, see llmscratch.kernels
    ops: str = "array-api"  # op set for matmul, GELU, LayerNorm, loss, AdamW: array-api | cpu-fused (kernels)

    def __post_init__(self) -> None:
        for name, value, choices in (("pos", self.pos, POSITIONS), ("norm", self.norm, NORMS), ("mlp", self.mlp, MLPS)):
            if value not in choices:
                hint = did_you_mean(value, choices)
                raise ConfigError(f"unknown {name} {value!r}{hint}; choose one of {', '.join(choices)}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.kv_heads:
            raise ConfigError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.kv_heads})")
        if self.pos == "rope" and self.head_dim % 2:
            raise ConfigError(f"pos='rope' needs an even head dim, got n_embd/n_head = {self.head_dim}")
        if self.pos == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"pos='sinusoidal' needs an even n_embd, got {self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config key {unknown[0]!r}{did_you_mean(unknown[0], known)}")
        return cls(**d)


def parameter_specs(cfg: GPTConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, init) in creation order; init is normal (std 0.02), residual (0.02/√(2L)), zeros or ones."""
    C, V, L, F, D = cfg.n_embd, cfg.vocab_size, cfg.n_layer, cfg.hidden, cfg.head_dim
    qkv = (cfg.n_head + 2 * cfg.kv_heads) * D
    fc = 2 * F if cfg.mlp == "swiglu" else F  # swiglu's c_fc holds [gate | up]
    specs: dict[str, tuple[tuple[int, ...], str]] = {"transformer.wte.weight": ((V, C), "normal")}
    if cfg.pos == "learned":
        specs["transformer.wpe.weight"] = ((cfg.block_size, C), "normal")

    def norm(name: str) -> None:
        specs[f"{name}.weight"] = ((C,), "ones")
        if cfg.bias and cfg.norm == "layernorm":
            specs[f"{name}.bias"] = ((C,), "zeros")

    def linear(name: str, n_in: int, n_out: int, init: str = "normal") -> None:
        specs[f"{name}.weight"] = ((n_in, n_out), init)
        if cfg.bias:
            specs[f"{name}.bias"] = ((n_out,), "zeros")

    for i in range(L):
        h = f"transformer.h.{i}"
        norm(f"{h}.ln_1")
        linear(f"{h}.attn.c_attn", C, qkv)
        linear(f"{h}.attn.c_proj", C, C, "residual")
        norm(f"{h}.ln_2")
        linear(f"{h}.mlp.c_fc", C, fc)
        linear(f"{h}.mlp.c_proj", F, C, "residual")
    norm("transformer.ln_f")
    if not cfg.tie_embeddings:
        specs["lm_head.weight"] = ((V, C), "normal")
    return specs


def init_params(cfg: GPTConfig, bk: Backend, seed: int = 0) -> dict[str, Any]:
    """GPT-2 initialisation drawn from one host NumPy generator in float64, then cast: every backend and
    dtype starts from the same weights."""
    rng = np.random.default_rng(seed)
    std = {"normal": 0.02, "residual": 0.02 / math.sqrt(2 * cfg.n_layer)}
    params = {}
    for name, (shape, init) in parameter_specs(cfg).items():
        if init in std:
            value = rng.standard_normal(shape) * std[init]
        else:
            value = np.full(shape, 1.0 if init == "ones" else 0.0)
        params[name] = bk.from_numpy(value)
    return params


class GPT:
    """``logits, loss = model.forward(idx, targets)``, then ``grads = model.backward()``."""

    def __init__(
        self, config: GPTConfig, backend: str | Backend = "numpy", seed: int = 0, params: dict[str, Any] | None = None
    ) -> None:
        self.config = config
        self.bk = get_backend(backend)
        self.kernel = get_attention_kernel(config.attention, self.bk)
        self.op_set = get_ops(config.ops, self.bk)
        self.params = init_params(config, self.bk, seed) if params is None else params
        self._check_params()
        # one fixed order (a loaded file's order can vary): sums over all parameters, such as the global
        # gradient norm, then always add in the same order, which keeps float results reproducible
        self.params = {name: self.params[name] for name in parameter_specs(config)}
        self.training = True  # dropout is on in training mode only
        self._dropout_rng = self.bk.generator(seed, 0x0D0)
        self._act_forward, self._act_backward = activation(config.mlp, self.op_set)
        T, C = config.block_size, config.n_embd
        if config.pos == "rope":
            self._rope = ops.rope_tables(self.bk, T, config.head_dim, base=config.rope_base)
        if config.pos == "sinusoidal":
            self._sinusoid = ops.sinusoidal_table(self.bk, T, C)
        self._cache: dict[str, Any] | None = None

    def _check_params(self) -> None:
        specs = parameter_specs(self.config)
        missing = [n for n in specs if n not in self.params]
        extra = [n for n in self.params if n not in specs]
        if missing or extra:
            raise ShapeError(f"parameters do not match the config: missing {missing[:3]}, unexpected {extra[:3]}")
        for name, (shape, _) in specs.items():
            if tuple(self.params[name].shape) != shape:
                got = tuple(self.params[name].shape)
                raise ShapeError(f"parameter {name} has shape {got}, the config needs {shape}")

    # ---- small helpers: one named layer's forward and backward ----------------------------------------------

    def _linear_forward(self, x: Any, name: str) -> tuple[Any, Any]:
        w, b = self.params[f"{name}.weight"], self.params.get(f"{name}.bias")
        return ops.linear_forward(self.bk, x, w, b, matmul=self.op_set.matmul)

    def _linear_backward(self, dout: Any, cache: Any, name: str, grads: dict) -> Any:
        dx, grads[f"{name}.weight"], db = ops.linear_backward(self.bk, dout, cache)
        if db is not None:
            grads[f"{name}.bias"] = db
        return dx

    def _norm_forward(self, x: Any, name: str) -> tuple[Any, Any]:
        w, eps = self.params[f"{name}.weight"], self.config.norm_eps
        if self.config.norm == "rmsnorm":
            return ops.rmsnorm_forward(self.bk, x, w, eps)
        return self.op_set.layernorm_forward(self.bk, x, w, self.params.get(f"{name}.bias"), eps)

    def _norm_backward(self, dout: Any, cache: Any, name: str, grads: dict) -> Any:
        if self.config.norm == "rmsnorm":
            dx, grads[f"{name}.weight"] = ops.rmsnorm_backward(self.bk, dout, cache)
            return dx
        dx, grads[f"{name}.weight"], db = self.op_set.layernorm_backward(self.bk, dout, cache)
        if db is not None:
            grads[f"{name}.bias"] = db
        return dx

    def _head_weight_name(self) -> str:
        return "transformer.wte.weight" if self.config.tie_embeddings else "lm_head.weight"

    # ---- attention and MLP sublayers --------------------------------------------------------------------------

    def _attention_forward(self, x: Any, i: int, offset: int, kv_cache: KVCache | None) -> tuple[Any, Any]:
        """x (B,T,C) -> out (B,T,C)"""
        xp, cfg = self.bk.xp, self.config
        B, T, _ = x.shape
        H, Hkv, D = cfg.n_head, cfg.kv_heads, cfg.head_dim
        name = f"transformer.h.{i}.attn"
        qkv, c_attn = self._linear_forward(x, f"{name}.c_attn")  # (B,T,(H+2Hkv)·D)
        qkv = xp.permute_dims(xp.reshape(qkv, (B, T, H + 2 * Hkv, D)), (0, 2, 1, 3))  # (B,H+2Hkv,T,D)
        q, k, v = qkv[:, :H, ...], qkv[:, H : H + Hkv, ...], qkv[:, H + Hkv :, ...]
        c_rope = None
        if cfg.pos == "rope":
            cos, sin = (table[offset : offset + T, ...] for table in self._rope)
            q, c_rope = ops.rope_forward(self.bk, q, cos, sin)
            k, _ = ops.rope_forward(self.bk, k, cos, sin)  # same tables: one cache serves both
        if kv_cache is not None:
            k, v = kv_cache.append(i, k, v)
        y, c_kernel = self.kernel.forward(self.bk, q, k, v, causal=True)  # (B,H,T,D)
        y = xp.reshape(xp.permute_dims(y, (0, 2, 1, 3)), (B, T, H * D))
        out, c_proj = self._linear_forward(y, f"{name}.c_proj")
        return out, (c_attn, c_rope, c_kernel, c_proj)

    def _attention_backward(self, dout: Any, cache: Any, i: int, grads: dict) -> Any:
        """dout (B,T,C) -> dx (B,T,C)"""
        xp, cfg = self.bk.xp, self.config
        c_attn, c_rope, c_kernel, c_proj = cache
        B, T, _ = dout.shape
        H, Hkv, D = cfg.n_head, cfg.kv_heads, cfg.head_dim
        name = f"transformer.h.{i}.attn"
        dy = self._linear_backward(dout, c_proj, f"{name}.c_proj", grads)
        dy = xp.permute_dims(xp.reshape(dy, (B, T, H, D)), (0, 2, 1, 3))  # (B,H,T,D)
        dq, dk, dv = self.kernel.backward(self.bk, dy, c_kernel)
        if c_rope is not None:
            dq, dk = ops.rope_backward(self.bk, dq, c_rope), ops.rope_backward(self.bk, dk, c_rope)
        heads_last = [xp.permute_dims(g, (0, 2, 1, 3)) for g in (dq, dk, dv)]  # views, (B,T,·,D)
        dqkv = xp.reshape(xp.concat(heads_last, axis=2), (B, T, (H + 2 * Hkv) * D))  # one copy
        return self._linear_backward(dqkv, c_attn, f"{name}.c_attn", grads)

    def _mlp_forward(self, x: Any, i: int) -> tuple[Any, Any]:
        """x (B,T,C) -> out (B,T,C);  out = act(x @ w_fc + b_fc) @ w_proj + b_proj"""
        name = f"transformer.h.{i}.mlp"
        h, c_fc = self._linear_forward(x, f"{name}.c_fc")  # (B,T,F) or (B,T,2F) for swiglu
        h, c_act = self._act_forward(self.bk, h)  # (B,T,F)
        out, c_proj = self._linear_forward(h, f"{name}.c_proj")
        return out, (c_fc, c_act, c_proj)

    def _mlp_backward(self, dout: Any, cache: Any, i: int, grads: dict) -> Any:
        name = f"transformer.h.{i}.mlp"
        c_fc, c_act, c_proj = cache
        dh = self._linear_backward(dout, c_proj, f"{name}.c_proj", grads)
        dh = self._act_backward(self.bk, dh, c_act)
        return self._linear_backward(dh, c_fc, f"{name}.c_fc", grads)

    # ---- a block: x = x + drop(attn(ln_1(x))); x = x + drop(mlp(ln_2(x))) --------------------------------

    def _block_forward(self, x: Any, i: int, offset: int, kv_cache: KVCache | None, rng: Any) -> tuple[Any, Any]:
        p = self._dropout_p()
        h, c_ln1 = self._norm_forward(x, f"transformer.h.{i}.ln_1")
        a, c_attn = self._attention_forward(h, i, offset, kv_cache)
        a, c_drop1 = ops.dropout_forward(self.bk, a, p, rng)
        x = x + a
        h, c_ln2 = self._norm_forward(x, f"transformer.h.{i}.ln_2")
        m, c_mlp = self._mlp_forward(h, i)
        m, c_drop2 = ops.dropout_forward(self.bk, m, p, rng)
        x = x + m
        return x, (c_ln1, c_attn, c_drop1, c_ln2, c_mlp, c_drop2)

    def _block_backward(self, dx: Any, cache: Any, i: int, grads: dict) -> Any:
        c_ln1, c_attn, c_drop1, c_ln2, c_mlp, c_drop2 = cache
        dm = ops.dropout_backward(self.bk, dx, c_drop2)
        dx = dx + self._norm_backward(self._mlp_backward(dm, c_mlp, i, grads), c_ln2, f"transformer.h.{i}.ln_2", grads)
        da = ops.dropout_backward(self.bk, dx, c_drop1)
        dh = self._attention_backward(da, c_attn, i, grads)
        return dx + self._norm_backward(dh, c_ln1, f"transformer.h.{i}.ln_1", grads)

    def _dropout_p(self) -> float:
        return self.config.dropout if self.training else 0.0

    # ---- the whole model -------------------------------------------------------------------------------

    def as_ids(self, idx: Any) -> Any:
        """Token ids as a (B,T) int array on this backend (accepts lists and NumPy arrays)."""
        if isinstance(idx, (list, tuple, np.ndarray)):
            idx = self.bk.from_numpy(np.asarray(idx, dtype=np.int64))
        if idx.ndim != 2:
            raise ShapeError(f"token ids must be (B, T), got shape {tuple(idx.shape)}")
        return idx

    def forward(
        self, idx: Any, targets: Any = None, *, kv_cache: KVCache | None = None, rng: Any = None
    ) -> tuple[Any, Any]:
        """idx (B,T) int, targets (B,T) int or None -> logits (B,T,V), loss () or None.

        With ``kv_cache`` the tokens continue the cached ones (generation) and nothing is kept for backward.
        ``rng`` (from ``backend.generator``) draws the dropout masks; a model-owned generator by default.
        """
        bk, xp, cfg, p = self.bk, self.bk.xp, self.config, self.params
        idx = self.as_ids(idx)
        T = idx.shape[1]
        offset = 0 if kv_cache is None else kv_cache.length
        if offset + T > cfg.block_size:
            raise DataError(
                f"a sequence of {offset + T} tokens is longer than the model's context (block_size={cfg.block_size}); "
                "crop the input or train with a larger block_size"
            )
        rng = self._dropout_rng if rng is None else rng
        x, c_wte = ops.embedding_forward(bk, idx, p["transformer.wte.weight"])  # (B,T,C)
        if cfg.pos == "learned":
            x = x + p["transformer.wpe.weight"][offset : offset + T, ...]
        elif cfg.pos == "sinusoidal":
            x, _ = ops.positions_forward(bk, x, self._sinusoid[offset : offset + T, ...])
        x, c_drop = ops.dropout_forward(bk, x, self._dropout_p(), rng)
        c_blocks = []
        for i in range(cfg.n_layer):
            x, c = self._block_forward(x, i, offset, kv_cache, rng)
            c_blocks.append(c)
        if kv_cache is not None:
            kv_cache.advance(T)
        x, c_lnf = self._norm_forward(x, "transformer.ln_f")
        head = xp.matrix_transpose(p[self._head_weight_name()])  # (C,V)
        logits, c_head = ops.linear_forward(bk, x, head, matmul=self.op_set.matmul)  # (B,T,V)
        loss = c_loss = None
        if targets is not None:
            loss, c_loss = self.op_set.cross_entropy_forward(bk, logits, self.as_ids(targets))
        self._cache = (
            None
            if kv_cache is not None
            else {
                "T": T,
                "wte": c_wte,
                "drop": c_drop,
                "blocks": c_blocks,
                "ln_f": c_lnf,
                "head": c_head,
                "loss": c_loss,
            }
        )
        return logits, loss

    def backward(self, dloss: float = 1.0) -> dict[str, Any]:
        """Gradients of ``dloss · loss`` from the last forward, one per parameter, under the same names."""
        cache = self._cache
        if cache is None or cache["loss"] is None:
            raise RuntimeError("backward() needs a forward(idx, targets) first (with targets, without a kv_cache)")
        bk, xp, cfg = self.bk, self.bk.xp, self.config
        grads: dict[str, Any] = {}
        dlogits = self.op_set.cross_entropy_backward(bk, dloss, cache["loss"])  # (B,T,V)
        dx, dhead_t, _ = ops.linear_backward(bk, dlogits, cache["head"])
        head_grad = xp.matrix_transpose(dhead_t)  # (V,C)
        dx = self._norm_backward(dx, cache["ln_f"], "transformer.ln_f", grads)
        for i in reversed(range(cfg.n_layer)):
            dx = self._block_backward(dx, cache["blocks"][i], i, grads)
        dx = ops.dropout_backward(bk, dx, cache["drop"])
        if cfg.pos == "learned":
            T = cache["T"]
            dwpe = bk.zeros(self.params["transformer.wpe.weight"].shape)
            dwpe[:T, ...] = xp.sum(dx, axis=0)  # every sequence used positions 0..T-1
            grads["transformer.wpe.weight"] = dwpe
        dwte = ops.embedding_backward(bk, dx, cache["wte"])
        if cfg.tie_embeddings:
            grads["transformer.wte.weight"] = dwte + head_grad  # tied: both uses contribute
        else:
            grads["transformer.wte.weight"], grads["lm_head.weight"] = dwte, head_grad
        self._cache = None
        return {name: grads[name] for name in self.params}  # in parameter order

    # ---- sizes -----------------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the position table, as nanoGPT reports."""
        n = sum(math.prod(shape) for shape, _ in parameter_specs(self.config).values())
        if non_embedding and self.config.pos == "learned":
            n -= self.config.block_size * self.config.n_embd
        return n

    def flops_per_token(self, T: int | None = None) -> float:
        """Training FLOPs per token, forward + backward (the PaLM appendix estimate nanoGPT uses):
        6N for the matmuls of N parameters plus 12·L·C·T for attention's QKᵀ and AV."""
        cfg = self.config
        T = cfg.block_size if T is None else T
        return 6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_embd * T
