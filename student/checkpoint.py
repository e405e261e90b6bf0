"""Atomic training checkpoints: model, optimizer, EMA, sampler cursor and the resolved config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file + rename): never half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a damaged file
        raise ValueError(f"checkpoint {p} is unreadable ({e}); delete it to start over") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{p} is not a distill training checkpoint")
    return state
