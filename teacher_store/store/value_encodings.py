"""The value encodings: one frozen table, the only place that knows each encoding.

A store's ``values`` array holds the teacher's top-K log-probabilities in one of these
encodings (``attrs.value_encoding``). Everything else is derived from :data:`ENCODINGS`: the
schema's allowed names, the block format's wire codes, ``distill verify``'s tolerances, the
``distill generate --value-encoding`` choices and the id-order padding rule.

* ``logprob-f16``: float16 log-probs (schema version 1's default).
* ``prob-u8``: p ~= q / 255, so the reconstruction error is at most 1/510 < 2e-3 for every entry.
* ``prob-u8x3``: ranks 1-2 as prob-u8, ranks >= 3 as q / 765 (the 3rd largest p is at most 1/3):
  a 3x finer tail, which keeps the KL to the teacher at K=100 (linear 1/255 flattens the tail).

Adding an encoding is one entry here (a new :class:`ValueEncoding` subclass if neither kind
fits) plus its tests; the wire code must be new (block readers refuse unknown codes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

# numpy is imported in the methods, not here: `distill --help` builds the CLI choices from
# this table and must not pay numpy's import (~0.2 s).
ToleranceSpace = Literal["logp", "p"]
# prob-u8 is enough below this K (measured: KL +0.001 nats at K=10, +0.057 at K=100).
FINE_TAIL_FROM_K = 17
_U8_SCALE = 255.0
# float16: half an ulp is at most 2**-11 relative; subnormals 2**-25 absolute (2**-24 kept).
F16_HALF_ULP_REL = 2.0**-11
F16_SUBNORMAL_ABS = 2.0**-24
_F16_FLOOR = -60000.0  # float16 bottoms out near -65504; log-probs that small are p = 0 anyway


@dataclass(frozen=True)
class ValueEncoding:
    """One encoding: its name, stored dtype, block-format codes and its numeric behaviour."""

    name: str
    dtype_name: str  # the ``values`` array's dtype, as numpy names it
    wire_code: int  # block format header byte 10
    dtype_code: int  # block format header byte 9 (one code per dtype)
    head: int  # leading ranks kept in rank order by the head-sorted id orders
    tolerance_space: ToleranceSpace  # where verify compares stored and fresh values

    @property
    def dtype(self) -> np.dtype:
        """The ``values`` array's dtype."""
        import numpy as np

        return np.dtype(self.dtype_name)

    def encode(self, logprobs: np.ndarray) -> np.ndarray:
        """Float log-probabilities [..., K] (rank order, descending) -> stored values."""
        raise NotImplementedError

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Stored values [..., K] -> float32 log-probabilities (``-inf`` for zero probability)."""
        raise NotImplementedError

    def quant_step(self, k: int) -> np.ndarray:
        """The step in p per rank, [K] float64 (0 where the encoding is not quantized in p);
        the worst |p_stored - p| is half of it, and closer entries may swap ranks."""
        import numpy as np

        return np.zeros(k)

    def zero(self, values: np.ndarray) -> np.ndarray:
        """Entries [..., K] whose stored value is zero probability (padding in head-sorted-pad)."""
        import numpy as np

        return np.zeros(np.shape(values), bool)

    def bound(self, ref: np.ndarray) -> np.ndarray:
        """The encoding's rounding error at fresh log-probs ``ref`` [K], in
        :attr:`tolerance_space` (verify adds its compute slack)."""
        raise NotImplementedError


@dataclass(frozen=True)
class LogProbFloat(ValueEncoding):
    """Log-probabilities stored as a float dtype, clipped at ``floor``."""

    floor: float = _F16_FLOOR

    def encode(self, logprobs: np.ndarray) -> np.ndarray:
        import numpy as np

        logprobs = np.asarray(logprobs, dtype=np.float32)
        return np.clip(logprobs, self.floor, 0.0).astype(self.dtype)

    def decode(self, values: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.asarray(values, dtype=np.float32)

    def bound(self, ref: np.ndarray) -> np.ndarray:
        import numpy as np

        # log-probs below the floor are clipped at encode time: zero probability either way.
        err = F16_HALF_ULP_REL * np.abs(ref) + F16_SUBNORMAL_ABS
        return np.asarray(np.where(ref < self.floor, np.inf, err))


@dataclass(frozen=True)
class ScaledProbU8(ValueEncoding):
    """p ~= q / scale in uint8, with a ``tail_factor`` times finer scale after the head."""

    tail_factor: int = 1

    def scale(self, k: int) -> np.ndarray:
        """Scale per rank: [K] float32 (p = q / scale)."""
        import numpy as np

        scale = np.full(k, _U8_SCALE, np.float32)
        scale[self.head :] *= self.tail_factor
        return scale

    def encode(self, logprobs: np.ndarray) -> np.ndarray:
        import numpy as np

        logprobs = np.asarray(logprobs, dtype=np.float32)
        # The r-th largest probability is at most 1/r, so q <= 255 up to float rounding.
        q = np.rint(np.exp(logprobs) * self.scale(logprobs.shape[-1]))
        return np.clip(q, 0, 255).astype(np.uint8)

    def decode(self, values: np.ndarray) -> np.ndarray:
        import numpy as np

        q = np.asarray(values, dtype=np.float32)
        with np.errstate(divide="ignore"):
            return np.log(q / self.scale(q.shape[-1]))

    def quant_step(self, k: int) -> np.ndarray:
        import numpy as np

        return 1.0 / self.scale(k).astype(np.float64)

    def zero(self, values: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.asarray(values == 0)

    def bound(self, ref: np.ndarray) -> np.ndarray:
        return 0.5 * self.quant_step(len(ref))


_F16, _U8 = "float16", "uint8"
# head = max(1, tail_factor - 1): the ranks whose largest possible p needs the coarse scale.
_TABLE = (
    LogProbFloat("logprob-f16", _F16, wire_code=1, dtype_code=1, head=1, tolerance_space="logp"),
    ScaledProbU8("prob-u8", _U8, wire_code=2, dtype_code=2, head=1, tolerance_space="p"),
    ScaledProbU8(
        "prob-u8x3", _U8, wire_code=3, dtype_code=2, head=2, tolerance_space="p", tail_factor=3
    ),
)
ENCODINGS: Mapping[str, ValueEncoding] = MappingProxyType({e.name: e for e in _TABLE})
"""Every value encoding by name (read-only)."""
VALUE_ENCODINGS: tuple[str, ...] = tuple(ENCODINGS)


class UnknownEncoding(ValueError):
    """A value encoding name that is not in :data:`ENCODINGS`."""


def encoding(name: str) -> ValueEncoding:
    """The table entry for ``name``; :class:`UnknownEncoding` (one line) otherwise."""
    try:
        return ENCODINGS[name]
    except (KeyError, TypeError):
        raise UnknownEncoding(
            f"unknown value encoding {name!r}; known: {', '.join(VALUE_ENCODINGS)}"
        ) from None


def default_encoding(topk: int) -> str:
    """The value encoding `distill generate` picks for ``topk`` when none is given."""
    return "prob-u8x3" if topk >= FINE_TAIL_FROM_K else "prob-u8"


def _check_table() -> None:
    """Codes are unique and each dtype has one code: a table edit that breaks either fails
    at import, not on a reader."""
    assert len({e.wire_code for e in _TABLE}) == len(_TABLE), "duplicate wire codes"
    by_code: dict[int, str] = {}
    for e in _TABLE:
        assert by_code.setdefault(e.dtype_code, e.dtype_name) == e.dtype_name, "dtype code reused"


_check_table()

__all__ = [
    "ENCODINGS",
    "FINE_TAIL_FROM_K",
    "VALUE_ENCODINGS",
    "LogProbFloat",
    "ScaledProbU8",
    "UnknownEncoding",
    "ValueEncoding",
    "default_encoding",
    "encoding",
]
