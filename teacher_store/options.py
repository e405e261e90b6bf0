"""Command options: bounds of the sizes that set an allocation, and one-line option errors.

Every command's config is a pydantic model (``GenerateConfig``, ``TrainConfig``, ...).
:func:`validate_options` builds one and turns pydantic's multi-line ``ValidationError`` into an
:class:`OptionsError`: one line per problem, naming the flag (or the config file's key), the
value given and the valid range. The ``distill`` dispatcher prints each line and exits 2.

The bounds are far above any real use; they exist so that a typo (``--img-size 100000``) is a
one-line error before anything is created, not an allocation of hundreds of GB mid-run.
Nothing heavy is imported here: the dispatcher imports it on its error path.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

MIN_IMG_SIZE = 8  # smallest view side (px) a render takes
MAX_IMG_SIZE = 4096  # largest image / view side (px) rendered or run through a model
MAX_BATCH = 8192  # largest batch of images (teacher batch, student batch per rank)
MAX_WORKERS = 256  # most DataLoader worker processes
MAX_THREADS = 1024  # most torch CPU threads
MAX_TOPK = 4096  # most teacher outputs kept per view
MAX_VIEWS = 16384  # most view slots per sample (and per chunk or shard)
MAX_CHUNK_SAMPLES = 1 << 20  # most samples per chunk or shard
MAX_SEED = 2**64 - 1  # seeds are 64-bit (the view codec, numpy's and torch's generators)
# Threads per process reading images ahead (teacher_store.images.prefetch); 0: none.
DEFAULT_READ_THREADS = 8  # ~8 object reads in flight hide ~40 ms each behind a replay's work
MAX_READ_THREADS = 256
# What every --data accepts (teacher_store.images.source.open_images).
DATA_HELP = (
    "an ImageFolder (folder or URL such as s3://b/train/) or tar shards "
    "(shard-{000000..000127}.tar)"
)

_M = TypeVar("_M")


class OptionsError(ValueError):
    """Bad options of a command: ``problems`` holds one line per bad option."""

    def __init__(self, problems: Collection[str]) -> None:
        self.problems = tuple(problems) or ("bad options",)
        super().__init__("; ".join(self.problems))


def validate_options(
    model: type[_M],
    values: Mapping[str, Any],
    *,
    file: str | None = None,
    file_keys: Collection[str] = (),
) -> _M:
    """``model.model_validate(values)``, or an :class:`OptionsError` naming each bad option.

    Options are named as flags (``batch_size`` -> ``--batch-size``) unless their key is in
    ``file_keys``: those came from the config ``file`` and are named as its keys.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(values))  # type: ignore[attr-defined]
    except ValidationError as e:
        raise OptionsError(option_problems(e, model, file, file_keys)) from None


def check_int(
    flag: str, value: int, lo: int, hi: int, error: type[OptionsError] | None = None
) -> int:
    """``value`` when an integer in ``[lo, hi]``, else an :class:`OptionsError` (or ``error``)
    naming ``flag`` (for options and arguments that are no field of a config model)."""
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or not lo <= value <= hi:
        problem = f"{flag} {value!r}: must be an integer in [{lo}, {_num(hi)}]"
        raise (error or OptionsError)([problem])
    return value


def option_problems(
    e: Any,
    model: type | None = None,
    file: str | None = None,
    file_keys: Collection[str] = (),
    flags: bool = True,
    name: Callable[[str], str] | None = None,
) -> list[str]:
    """One line per error of the pydantic ``ValidationError`` ``e`` (no URLs, no dumps);
    ``flags``: name the fields as command-line flags; ``name(field)``: how to name a top-level
    field instead (e.g. a flag and the environment variable that may have set it)."""
    lines = []
    for err in e.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        msg = _message(err, model, loc[0] if loc else None)
        if not loc:  # a check across options (a model validator)
            lines.append(msg)
            continue
        dotted = ".".join(loc)
        in_file = bool(file) and loc[0] in file_keys
        if name is not None and not in_file:
            where = ".".join([name(loc[0]), *loc[1:]])
        else:
            where = dotted if in_file or not flags else _flag(dotted)
        value = err.get("input")
        shown = "" if err.get("type") == "missing" or not _scalar(value) else f" {_shown(value)}"
        lines.append(f"{where}{shown}{f' in {file}' if in_file else ''}: {msg}")
    return lines


def _flag(name: str) -> str:
    head, dot, rest = name.partition(".")
    return "--" + head.replace("_", "-") + dot + rest


def _shown(value: Any) -> str:
    """A value as typed (``0``, ``abc``); quoted when empty or holding spaces."""
    plain = isinstance(value, str) and value.strip() == value and " " not in value and value
    return str(value) if plain or not isinstance(value, str) else repr(value)


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str)) and len(repr(value)) <= 60


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _message(err: Mapping[str, Any], model: type | None, field: str | None) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown option"
    if kind in _BOUND_ERRORS or kind == "finite_number":
        valid = _valid_range(model, field)
        if valid:
            return f"must be {valid}"
    text = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return text.replace("Input should be", "must be", 1)


def _valid_range(model: type | None, field: str | None) -> str | None:
    """``an integer in [8, 4096]``, ``a number in [0, 1)``, ``an integer >= 1``: the field's
    bounds as declared on the model."""
    fields = getattr(model, "model_fields", {})
    if field not in fields:
        return None
    info = fields[field]
    lo = hi = None
    for m in info.metadata:
        for attr, text in (("ge", "["), ("gt", "(")):
            if getattr(m, attr, None) is not None:
                lo = (text, getattr(m, attr))
        for attr, text in (("le", "]"), ("lt", ")")):
            if getattr(m, attr, None) is not None:
                hi = (text, getattr(m, attr))
    if lo is None and hi is None:
        return None
    kind = "an integer" if _is_int(info.annotation) else "a number"
    if lo is not None and hi is not None:
        return f"{kind} in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo is not None:
        return f"{kind} {'>=' if lo[0] == '[' else '>'} {_num(lo[1])}"
    assert hi is not None
    return f"{kind} {'<=' if hi[0] == ']' else '<'} {_num(hi[1])}"


def _num(x: float) -> str:
    if isinstance(x, int) and x >= 1 << 32 and (x + 1) & x == 0:
        return f"2**{int(math.log2(x + 1))} - 1"  # MAX_SEED reads as a power of two
    return f"{x:g}" if isinstance(x, float) else str(x)


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return int in typing.get_args(annotation)
    return False


def error_lines(e: ValueError) -> list[str]:
    """The lines the dispatcher prints for a bad-input error: one per problem."""
    if isinstance(e, OptionsError):
        return list(e.problems)
    from pydantic import ValidationError

    if isinstance(e, ValidationError):  # a model validated without validate_options
        return [f"{e.title}: {line}" for line in option_problems(e, flags=False)]
    return [str(e)]


__all__ = [
    "MAX_BATCH",
    "MAX_CHUNK_SAMPLES",
    "MAX_IMG_SIZE",
    "MAX_SEED",
    "MAX_THREADS",
    "MAX_TOPK",
    "MAX_VIEWS",
    "MAX_WORKERS",
    "MIN_IMG_SIZE",
    "OptionsError",
    "check_int",
    "error_lines",
    "option_problems",
    "validate_options",
]
