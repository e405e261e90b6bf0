"""The teacher runner shared by `distill generate` and `distill verify`: uint8 views -> top-K."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from teacher_store.views.replay import view_to_float


class Teacher:
    """Teacher forward to top-K log-probs on ``device``; autocast (bf16) only on CUDA.

    ``info`` is the teacher's preprocessing info (``mean``, ``std``; a ``TeacherInfo``). Generate
    and verify must build it the same way: the stored targets are its outputs.
    """

    def __init__(
        self, model: torch.nn.Module, info: Any, device: torch.device, topk: int, amp: bool = True
    ) -> None:
        self.model = model.to(device).eval()
        self.mean, self.std = info.mean, info.std
        self.k, self.device = topk, device
        self.amp = amp and device.type == "cuda"
        if device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def check_input(self, size: int) -> None:
        """Run one blank ``size`` px view through the model: a ValueError, before anything is
        written, when the teacher cannot take that size (a ViT's fixed patch grid, a size
        below the network's total stride)."""
        try:
            self(torch.zeros(1, 3, size, size, dtype=torch.uint8))
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, AssertionError, ValueError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
            raise ValueError(
                f"the teacher cannot run on {size} px views ({why}); pass an --img-size it "
                "accepts, or leave --img-size out for its own"
            ) from None

    @torch.inference_mode()
    def __call__(self, views: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """uint8 views [B, 3, H, W] -> (ids [B, K], log-probs [B, K]) in rank order."""
        x = view_to_float(views.to(self.device, non_blocking=True), self.mean, self.std)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(x)
        logp = torch.log_softmax(logits.float(), dim=-1)  # [B, C]
        vals, ids = logp.topk(self.k, dim=-1, sorted=True)  # rank order, descending
        return ids.cpu().numpy(), vals.cpu().numpy()


__all__ = ["Teacher"]
