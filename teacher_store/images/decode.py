"""Image decode paths: Pillow on the CPU, or batched JPEG decode on a GPU (nvJPEG).

A store records the path its generation used (``decode`` in its config, beside the device type):
a replayed view is bit-exact only through the same path. ``"cpu"`` is Pillow (libjpeg-turbo);
torchvision's CPU JPEG decoder gives the same pixels on the images measured here, but Pillow is
the reference. ``"gpu"`` decodes the JPEGs of a batch in one ``torchvision.io.decode_jpeg`` call
on the job's CUDA device; other formats, and any JPEG the GPU decoder refuses, fall back to
Pillow, file by file (a fixed rule, so the store stays a pure function of its config). nvJPEG's
pixels may differ from libjpeg-turbo's by a few levels, so a student replays such a store
bit-exactly only with the same GPU decode.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from teacher_store.images.dataset import CorruptImageError, decode_image, printable_path

DecodePath = Literal["cpu", "gpu"]
DECODE_PATHS: tuple[str, ...] = ("cpu", "gpu")
_JPEG_MAGIC = b"\xff\xd8\xff"


class DecodeDeviceError(ValueError):
    """GPU decode was asked for on a device that is not a CUDA GPU."""


def check_decode(decode: str, device: torch.device) -> None:
    """Refuse a decode path the device cannot run, with the fix."""
    if decode not in DECODE_PATHS:
        raise ValueError(f"unknown decode path {decode!r}; use one of {list(DECODE_PATHS)}")
    if decode == "gpu" and device.type != "cuda":
        raise DecodeDeviceError(
            f"--decode gpu needs a CUDA device, and this job runs on {device.type}: "
            "use --decode cpu, or run on a GPU"
        )


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a baseline/progressive RGB-or-grey JPEG, None if not such a JPEG."""
    if not data.startswith(_JPEG_MAGIC):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                    return None  # CMYK/YCCK and friends: Pillow converts them its own way
                return im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _to_pil(chw: torch.Tensor) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(chw.permute(1, 2, 0).cpu().numpy()), "RGB")


def decode_images(
    paths: Sequence[str | os.PathLike[str]],
    device: torch.device,
    max_pixels: int,
) -> list[Image.Image | CorruptImageError]:
    """Decode the image files ``paths`` as RGB PIL images (or the error naming each bad one),
    in order: :func:`decode_image_data` over the files' bytes."""
    items: list[tuple[str | os.PathLike[str], bytes | CorruptImageError]] = []
    for path in paths:
        try:
            items.append((path, Path(path).read_bytes()))
        except OSError as e:
            items.append(
                (path, CorruptImageError(f"cannot read image {printable_path(path)}: {e}"))
            )
    return decode_image_data(items, device, max_pixels)


def decode_image_data(
    items: Sequence[tuple[str | os.PathLike[str], bytes | CorruptImageError]],
    device: torch.device,
    max_pixels: int,
) -> list[Image.Image | CorruptImageError]:
    """Decode each ``(path, bytes)`` as an RGB PIL image (or the error naming the file), in
    order; an item that is already an error (the file could not be read) stays one.

    JPEGs within the pixel limit are decoded together on ``device`` (one batched call); the
    others go through :func:`~teacher_store.images.dataset.decode_image` (Pillow), which also
    applies the limit and names the file in its error.
    """
    out: list[Image.Image | CorruptImageError | None] = [None] * len(items)
    batch: list[tuple[int, torch.Tensor]] = []
    for i, (path, data) in enumerate(items):
        if isinstance(data, CorruptImageError):
            out[i] = data
            continue
        size = _jpeg_size(data)
        if size is None or size[0] * size[1] > max_pixels:
            out[i] = _pillow(data, path, max_pixels)
        else:
            batch.append((i, torch.frombuffer(bytearray(data), dtype=torch.uint8)))
    decoded = _decode_jpegs([t for _, t in batch], device)
    for (i, _), img in zip(batch, decoded, strict=True):
        path, data = items[i]
        assert isinstance(data, bytes)
        out[i] = _to_pil(img) if img is not None else _pillow(data, path, max_pixels)
    assert all(o is not None for o in out)
    return out  # type: ignore[return-value]


def _pillow(
    data: bytes, path: str | os.PathLike[str], max_pixels: int
) -> Image.Image | CorruptImageError:
    try:
        return decode_image(data, path, max_pixels)
    except CorruptImageError as e:
        return e


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 [3, H, W] per JPEG (on ``device``), None where the decoder refuses the file."""
    if not data:
        return []
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the batch: find it, keep the others
        pass
    out: list[torch.Tensor | None] = []
    for d in data:
        try:
            out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out.append(None)
    return out
