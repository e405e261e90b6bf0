"""Low-frequency cropping (EfficientTrain / EfficientTrain++) and its cheap alternative.

:func:`lowfreq_crop` keeps exactly the ``b x b`` lowest spatial frequencies of a batch: it takes
the 2-D DFT of every channel, centres it (``fftshift``), cuts out the central ``b x b`` window and
transforms that window back to a ``b x b`` image. The result is a smaller image whose spectrum is
the original's low-frequency band (scaled by ``(b / H) * (b / W)`` so that pixel intensities, in
particular the mean, keep their scale). :func:`lowfreq_pad` is its inverse for band-limited
images: zero-padding the spectrum back to ``H x W`` (ideal sinc interpolation).

:func:`downsample` (antialiased bilinear resize) is the cheaper alternative the EfficientTrain
paper compares against: it also shrinks the image but attenuates rather than keeps the low band.

Everything works on batched float tensors ``[..., C, H, W]`` on any device (the training device:
the FFT runs on the GPU when the batch is there).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LowFreqMode = Literal["crop", "downsample"]
_DIMS = (-2, -1)


def _check(x: torch.Tensor, bandwidth: int) -> tuple[int, int]:
    if x.dim() < 3:
        raise ValueError(f"expected a batch [..., C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor (normalize first), got {x.dtype}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if not 1 <= bandwidth <= min(h, w):
        raise ValueError(
            f"bandwidth must be in [1, {min(h, w)}] for {h}x{w} images, got {bandwidth}"
        )
    return h, w


def _window(n: int, b: int) -> slice:
    """Indices of the ``b`` centred frequencies of a length-``n`` fftshifted axis.

    After ``fftshift`` the zero frequency sits at index ``n // 2``; the window starts ``b // 2``
    before it, so after cropping it sits at ``b // 2``, where ``ifftshift`` expects it.
    """
    start = n // 2 - b // 2
    return slice(start, start + b)


def lowfreq_crop(x: torch.Tensor, bandwidth: int) -> torch.Tensor:
    """``[..., C, H, W]`` float -> ``[..., C, b, b]``: the batch's ``b x b`` lowest frequencies.

    ``bandwidth == H == W`` returns ``x`` unchanged. The FFT runs in float32 (float64 input
    stays float64) on ``x``'s device; the output has ``x``'s dtype.
    """
    h, w = _check(x, bandwidth)
    if bandwidth == h == w:
        return x
    work = x if x.dtype == torch.float64 else x.float()
    spec = torch.fft.fftshift(torch.fft.fft2(work), dim=_DIMS)
    band = spec[..., _window(h, bandwidth), _window(w, bandwidth)]
    out = torch.fft.ifft2(torch.fft.ifftshift(band, dim=_DIMS)).real
    return (out * (bandwidth * bandwidth / (h * w))).to(x.dtype)


def lowfreq_pad(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`lowfreq_crop` for band-limited images: zero-pad the spectrum of
    ``y [..., C, b, b]`` to ``height x width`` and transform back (sinc interpolation)."""
    b = int(y.shape[-1])
    if y.shape[-2] != b or not b <= min(height, width):
        raise ValueError(
            f"expected square [..., b, b] with b <= {min(height, width)}, got {tuple(y.shape)}"
        )
    if not y.is_floating_point():
        raise ValueError(f"expected a float tensor, got {y.dtype}")
    work = y if y.dtype == torch.float64 else y.float()
    band = torch.fft.fftshift(torch.fft.fft2(work), dim=_DIMS)
    spec = band.new_zeros((*band.shape[:-2], height, width))
    spec[..., _window(height, b), _window(width, b)] = band
    out = torch.fft.ifft2(torch.fft.ifftshift(spec, dim=_DIMS)).real
    return (out * (height * width / (b * b))).to(y.dtype)


def downsample(x: torch.Tensor, bandwidth: int) -> torch.Tensor:
    """``[..., C, H, W]`` float -> ``[..., C, b, b]`` by antialiased bilinear resizing."""
    h, w = _check(x, bandwidth)
    if bandwidth == h == w:
        return x
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    out = F.interpolate(
        flat, size=(bandwidth, bandwidth), mode="bilinear", align_corners=False, antialias=True
    )
    return out.reshape(*lead, *out.shape[-3:])


def reduce_batch(x: torch.Tensor, bandwidth: int, mode: LowFreqMode = "crop") -> torch.Tensor:
    """Shrink a normalized batch to ``bandwidth`` by low-frequency cropping or downsampling."""
    if mode == "crop":
        return lowfreq_crop(x, bandwidth)
    if mode == "downsample":
        return downsample(x, bandwidth)
    raise ValueError(f"unknown low-frequency mode {mode!r}; use crop or downsample")
