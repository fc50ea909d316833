"""Weight-only quantization of a linear layer's weight.   Legend: C in channels, OC out channels, G inputs per
scale (a group), Cp = C rounded up to whole groups, N rows of x.

A weight w (C, OC) is stored as small integers q and one float scale s per group of G inputs of each output
channel, symmetric around zero (no offset):

    s[g, j] = max_{i in group g} |w[i, j]| / qmax          qmax = 127 (int8) or 7 (int4)
    q[i, j] = round(w[i, j] / s[g(i), j])  in [-qmax, qmax]
    ŵ[i, j] = q[i, j] · s[g(i), j]                         |ŵ - w| ≤ s / 2, and ŵ = w where w / s is an integer

int8 takes one group per output channel (G = C: a scale per column); int4 takes groups of G inputs (default
32), since 15 levels over a whole column would lose the small weights next to one large one. int4 values are
stored two to a byte, offset by 8 into 1..15: byte[k, j] = (q[2k, j] + 8) | (q[2k+1, j] + 8) << 4, so G must
be even; a C that is not a multiple of G gets zero rows up to Cp (they meet no input).

forward (the only pass: quantized weights are for inference):
    out = x @ ŵ + b,  computed block by block of rows of ŵ (dequantize ``ROWS`` rows, multiply, add), so no
    float copy of the whole weight is ever made. This is the reference the fused kernels are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..backends import Backend
from ..util.errors import ConfigError
from .checks import expect


class Format(NamedTuple):
    qmax: int  # the largest |q|
    per_byte: int  # values stored in one byte
    default_group: int | None  # None: one group per output channel


FORMATS = {"int8": Format(127, 1, None), "int4": Format(7, 2, 32)}
ROWS = 256  # rows of ŵ dequantized at a time by the reference product


@dataclass(frozen=True)
class QuantizedWeight:
    """A (C, OC) weight as integers and scales; ``shape`` is the weight's own, so it stands where w did."""

    format: str  # a key of FORMATS
    q: Any  # int8 (Cp, OC), or uint8 (Cp/2, OC) for int4 (two values a byte)
    scale: Any  # (Cp/G, OC) in the model's float dtype
    group: int  # G
    n_in: int  # C

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_in, int(self.scale.shape[1]))


def check_format(fmt: str, group: int | None) -> int | None:
    """The group a format takes (None: one per output channel); a one-line ConfigError for a bad pair."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown quantization {fmt!r}; choose from {', '.join(FORMATS)}")
    group = FORMATS[fmt].default_group if group is None else group
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
        raise ConfigError(f"quantization group must be a positive number of inputs, got {group!r}")
    if group is not None and group % FORMATS[fmt].per_byte:
        raise ConfigError(f"{fmt} stores two values a byte, so its group must be even, got {group}; use 32 or 64")
    return group


def quantize_weight(bk: Backend, w: Any, fmt: str, group: int | None = None) -> QuantizedWeight:
    """w (C,OC) -> its QuantizedWeight in ``fmt`` ("int8", "int4") with ``group`` inputs per scale (None:
    the format's default)."""
    xp = bk.xp
    expect(w.ndim == 2, "quantize_weight", f"w must be (C, OC), got shape {tuple(w.shape)}")
    C, OC = w.shape
    w = xp.reshape(xp.reshape(w, (-1,)), (C, OC))  # row by row in memory, a transposed view too: as kernels read q
    G = check_format(fmt, group) or C
    Cp = -(-C // G) * G
    if Cp > C:
        w = xp.concat([w, xp.zeros((Cp - C, OC), dtype=w.dtype, device=bk.device)], axis=0)
    grouped = xp.reshape(w, (Cp // G, G, OC))
    qmax = FORMATS[fmt].qmax
    scale = xp.max(xp.abs(grouped), axis=1) / qmax  # (Cp/G, OC)
    divisor = xp.where(scale == 0.0, 1.0, scale)  # an all-zero group: q = 0 whatever the scale
    q = xp.astype(xp.clip(xp.round(grouped / divisor[:, None, :]), -qmax, qmax), xp.int8)
    q = xp.reshape(q, (Cp, OC))
    if fmt == "int4":
        nibbles = xp.astype(xp.reshape(q, (Cp // 2, 2, OC)) + 8, xp.uint8)
        q = nibbles[:, 0, :] | (nibbles[:, 1, :] << 4)
    return QuantizedWeight(fmt, q, scale, G, C)


def dequantize(bk: Backend, qw: QuantizedWeight, start: int = 0, stop: int | None = None) -> Any:
    """Rows start..stop of ŵ (the whole (C,OC) by default) in the scale's dtype; start and stop on whole
    groups or at C."""
    xp = bk.xp
    stop = qw.n_in if stop is None else stop
    G, per_byte = qw.group, FORMATS[qw.format].per_byte
    g0, g1 = start // G, -(-stop // G)
    rows = qw.q[g0 * G // per_byte : g1 * G // per_byte, :]
    if qw.format == "int4":  # byte k holds rows 2k (low nibble) and 2k+1 (high nibble)
        pair = xp.stack([rows & 15, rows >> 4], axis=1)  # (K/2, 2, OC)
        rows = xp.astype(xp.reshape(pair, (-1, pair.shape[2])), xp.int8) - 8
    scale = qw.scale[g0:g1, :]
    w = xp.reshape(xp.astype(rows, scale.dtype), (g1 - g0, G, -1)) * scale[:, None, :]
    return xp.reshape(w, (-1, w.shape[2]))[: stop - start, :]


def quantized_matmul(bk: Backend, a: Any, qw: QuantizedWeight, bias: Any = None) -> Any:
    """a (M,C), qw standing for ŵ (C,N), bias (N,) or None -> a @ ŵ + bias (M,N), ``ROWS`` rows of ŵ at a time
    (the signature of ops.linear.matmul, so a quantized weight goes where a float one did)."""
    xp = bk.xp
    C, N = qw.shape
    expect(a.shape[-1] == C, "quantized_matmul", f"a has {a.shape[-1]} features but the weight is {C}x{N}")
    step = max(ROWS // qw.group, 1) * qw.group  # whole groups per block
    out = None
    for k0 in range(0, C, step):
        k1 = min(k0 + step, C)
        part = a[:, k0:k1] @ xp.astype(dequantize(bk, qw, k0, k1), a.dtype)
        out = part if out is None else out + part
    return out if bias is None else out + bias
