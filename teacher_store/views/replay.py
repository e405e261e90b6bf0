"""Bit-exact replay of a view: ``(image bytes, ViewParams, size) -> uint8 [3, H, W]``.

The pipeline is timm/TinyViT's (RandomResizedCrop, flip, RandAugment, colour jitter, random
erasing, MixUp/CutMix), implemented here with Pillow and numpy so that the output depends only
on the decoded image, the parameters and the output size: no torch threads, no global RNG, no
batch. Crop and geometric ops are defined in normalized coordinates, so a view rendered at
another size is the same view (progressive resizing keeps the teacher's targets valid).
Bytes are identical across processes, workers, batch sizes and torch thread counts; across
machines they are identical for the same Pillow and numpy builds (both are pinned).

:class:`Replayer` replays a store's view ``(slot, sample)`` from its dataset (decode, load the
image and its mixing partner, render); generation, verify, show and the student all use it.
Images decode through the store's decode path (:mod:`teacher_store.images.decode`): Pillow,
or, for a store generated with ``decode="gpu"``, nvJPEG on a CUDA device when the replayer
is given one (elsewhere Pillow again: close to, not bit-exact with, what the teacher saw).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from teacher_store.images.dataset import CorruptImageError, DraftRule
from teacher_store.images.decode import decode_image_data
from teacher_store.images.source import ImageSource
from teacher_store.options import MAX_IMG_SIZE, MIN_IMG_SIZE
from teacher_store.views.codec import (
    AugParams,
    MixParams,
    ViewParams,
    crop_box,
    decode,
    det_cos,
    det_sin,
)
from teacher_store.views.recipe import Recipe

if TYPE_CHECKING:
    from teacher_store.store.schema import StoreAttrs

FILL = (128, 128, 128)  # fill colour of the geometric ops
MIN_SIZE = MIN_IMG_SIZE
MAX_SIZE = MAX_IMG_SIZE  # a view of S px allocates 3 S^2 bytes (and more in the pipeline)
_PI = 3.141592653589793

RESAMPLE: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

_Op = Callable[[Image.Image, float], Image.Image]


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    return img.transform(
        img.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=FILL
    )


def _rotate(img: Image.Image, m: float) -> Image.Image:
    """Rotate counter-clockwise by ``m / 10 * 30`` degrees about the centre (libm-free matrix)."""
    theta = m * 3.0 * _PI / 180.0
    c, s = det_cos(theta), det_sin(theta)
    cx, cy = img.width / 2.0, img.height / 2.0
    # output -> input mapping, as Pillow's Image.rotate builds it
    return _affine(img, (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy))


def _posterize(img: Image.Image, m: float) -> Image.Image:
    bits = min(8, max(1, 4 - int(m * 4.0 / 10.0)))  # timm PosterizeIncreasing, never 0 bits
    return ImageOps.posterize(img, bits)


def _solarize(img: Image.Image, m: float) -> Image.Image:
    return ImageOps.solarize(img, min(256, max(0, 256 - int(m * 256.0 / 10.0))))


def _solarize_add(img: Image.Image, m: float) -> Image.Image:
    add = int(m * 110.0 / 10.0)
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _enhancer(kind: Callable[[Image.Image], ImageEnhance._Enhance]) -> _Op:
    def op(img: Image.Image, m: float) -> Image.Image:
        return kind(img).enhance(max(0.1, 1.0 + m * 0.9 / 10.0))  # timm *Increasing

    return op


def _shear_x(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, (1.0, m * 0.3 / 10.0, 0.0, 0.0, 1.0, 0.0))


def _shear_y(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, (1.0, 0.0, 0.0, m * 0.3 / 10.0, 1.0, 0.0))


def _translate_x(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, (1.0, 0.0, m * 0.45 / 10.0 * img.width, 0.0, 1.0, 0.0))


def _translate_y(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, (1.0, 0.0, 0.0, 0.0, 1.0, m * 0.45 / 10.0 * img.height))


OPS: dict[str, _Op] = {
    "AutoContrast": lambda img, m: ImageOps.autocontrast(img),
    "Equalize": lambda img, m: ImageOps.equalize(img),
    "Invert": lambda img, m: ImageOps.invert(img),
    "Rotate": _rotate,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _enhancer(ImageEnhance.Color),
    "Contrast": _enhancer(ImageEnhance.Contrast),
    "Brightness": _enhancer(ImageEnhance.Brightness),
    "Sharpness": _enhancer(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x,
    "TranslateYRel": _translate_y,
}


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if not (MIN_SIZE <= h <= MAX_SIZE and MIN_SIZE <= w <= MAX_SIZE):
        raise ValueError(f"view size must be {MIN_SIZE} to {MAX_SIZE} px a side, got {h}x{w}")
    return int(h), int(w)


def _pixel_box(box: Sequence[float], h: int, w: int) -> tuple[int, int, int, int]:
    """Normalized (left, top, right, bottom) -> pixel slice bounds (round half to even)."""
    return (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))


def render_aug(
    image: Image.Image, aug: AugParams, size: int | tuple[int, int], resample: str = "bicubic"
) -> np.ndarray:
    """Render one unmixed augmented image as a uint8 ``[H, W, 3]`` numpy array."""
    h, w = _hw(size)
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample {resample!r}; use one of {sorted(RESAMPLE)}")
    img = image if image.mode == "RGB" else image.convert("RGB")
    out = img.resize((w, h), RESAMPLE[resample], box=crop_box(aug, img.width, img.height))
    if aug.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for name, magnitude in aug.ops:
        out = OPS[name](out, magnitude)
    if aug.jitter is not None:
        out = ImageEnhance.Brightness(out).enhance(aug.jitter[0])
        out = ImageEnhance.Contrast(out).enhance(aug.jitter[1])
        out = ImageEnhance.Color(out).enhance(aug.jitter[2])
    arr = np.array(out, dtype=np.uint8)
    if aug.erase is not None:
        left, top, right, bottom = _pixel_box(aug.erase[:4], h, w)
        arr[top:bottom, left:right] = aug.erase[4:]
    return arr


def mix_arrays(base: np.ndarray, other: np.ndarray, mix: MixParams) -> np.ndarray:
    """Mix two rendered uint8 ``[H, W, 3]`` arrays as ``mix`` says (a new array)."""
    if mix.mode == "cutmix":
        if mix.box is None:
            raise ValueError("cutmix params need a box")
        left, top, right, bottom = _pixel_box(mix.box, base.shape[0], base.shape[1])
        out = base.copy()
        out[top:bottom, left:right] = other[top:bottom, left:right]
        return out
    lam = np.float32(mix.lam)
    blend = base.astype(np.float32) * lam + other.astype(np.float32) * (np.float32(1.0) - lam)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def render_view(
    image: Image.Image,
    params: ViewParams,
    size: int | tuple[int, int],
    partner: Image.Image | None = None,
    resample: str = "bicubic",
) -> torch.Tensor:
    """Render a view as a uint8 tensor ``[3, H, W]``; ``size`` is an int or ``(height, width)``.

    ``partner`` is the partner sample's image, needed when ``params.mix`` is set. The bytes
    depend only on (image pixels, params, size, resample).
    """
    _hw(size)
    if params.mix is not None and partner is None:
        raise ValueError(
            f"view ({params.slot}, {params.sample}) mixes with sample {params.mix.partner}: "
            "pass its image as partner"
        )
    arr = render_aug(image, params.base, size, resample)
    if params.mix is not None and partner is not None:
        other = render_aug(partner, params.mix.partner_aug, size, resample)
        arr = mix_arrays(arr, other, params.mix)
    return _chw(arr)


def draft_rule(aug: AugParams, size: int | tuple[int, int]) -> DraftRule:
    """The JPEG draft request for a view rendered at ``size``: the largest DCT scale (1/8,
    1/4, 1/2) at which the crop box still covers at least the output's pixels (no upsampling
    added); None (full decode) when even 1/2 would not."""
    h_out, w_out = _hw(size)

    def rule(width: int, height: int) -> tuple[int, int] | None:
        left, top, right, bottom = crop_box(aug, width, height)
        for scale in (8, 4, 2):
            if (right - left) / scale >= w_out and (bottom - top) / scale >= h_out:
                # Pillow picks the largest scale s with side // request >= s: floor division
                # makes that this scale (a ceil request can fall back to a larger decode)
                return (max(1, width // scale), max(1, height // scale))
        return None

    return rule


def view_to_float(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float32 ``(x / 255 - mean) / std`` on the tensor's device."""
    if batch.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 tensor, got {batch.dtype}")
    if batch.dim() < 3 or batch.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"channel mismatch: tensor {tuple(batch.shape)}, mean {list(mean)}, std {list(std)}"
        )
    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(-1, 1, 1)
    return batch.to(torch.float32).div_(255.0).sub_(m).div_(s)


# --------------------------------------------------------------------------------------------
# replaying a store's views


class UnreadableSampleError(CorruptImageError):
    """A view's base or partner image cannot be decoded; ``sample`` says which of the two."""

    def __init__(self, message: str, sample: int) -> None:
        super().__init__(message)
        self.sample = sample

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.sample))


@dataclass(frozen=True)
class ReplayedView:
    """One replayed view and what a loss or a report needs about it."""

    pixels: torch.Tensor  # uint8 [3, H, W]
    params: ViewParams
    label: int  # the sample's class (dataset folder order)
    partner_label: int  # the mixing partner's class; ``label`` when the view is not mixed
    lam: float  # weight of the sample's own image; 1.0 when the view is not mixed

    @property
    def partner(self) -> int | None:
        """The mixing partner's sample id, None when the view is not mixed."""
        return None if self.params.mix is None else self.params.mix.partner


class Replayer:
    """Replays a store's views ``(slot, sample)`` over its dataset: decode, load, render.

    Holds the store's codec inputs (seed, sample count, view slots, recipe) and canonical size
    (the teacher's input size), and a bounded LRU of decoded images (``cache_size`` images, 0:
    none): a view also loads its mixing partner (:meth:`render_many` shares it within a
    call). Which images load as corrupt is the folder's business (scan it with the store's
    ``max_image_pixels``); a corrupt image is remembered as such and not decoded again.
    Pickling drops the cache, so each DataLoader worker starts with its own empty one.

    ``draft=True`` decodes JPEGs at a reduced DCT scale where the view's crop allows it
    (:func:`draft_rule`): deterministic for a given output size, but not the pixels of the
    full decode the teacher saw (generation never uses it); Pillow path only, no cache.
    ``decode_hook(sample)``, when given, is called on every full decode (a way to count them;
    a DataLoader worker calls its own copy).
    """

    def __init__(
        self,
        folder: ImageSource,
        attrs: StoreAttrs,
        recipe: Recipe | None = None,
        cache_size: int = 64,
        device: torch.device | None = None,
        draft: bool = False,
        decode_hook: Callable[[int], None] | None = None,
    ) -> None:
        self.folder, self.draft = folder, draft
        self.decode_hook = decode_hook  # called with the sample of every full decode
        self.decode_path = str(attrs.config.get("decode", "cpu"))
        # nvJPEG only where the store used it and a CUDA device is at hand; else Pillow.
        gpu = self.decode_path == "gpu" and device is not None and device.type == "cuda"
        self.decode_device: torch.device | None = device if gpu else None
        self.store_seed, self.num_samples = int(attrs.store_seed), int(attrs.num_samples)
        self.num_slots = int(attrs.schedule_views)  # the recipe schedule's span
        self.first_slot = int(attrs.first_slot)  # a copy of slots A:B replays from slot A
        self.recipe = Recipe.from_dict(attrs.recipe) if recipe is None else recipe
        input_size = attrs.teacher.get("input_size")  # [3, H, W]
        self.size: int | None = int(input_size[1]) if input_size else None
        self.cache_size = cache_size
        self._cache: OrderedDict[int, Image.Image | str] = OrderedDict()  # str: load error

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    @property
    def exact(self) -> bool:
        """Whether images decode through the store's own path (so views are bit-exact)."""
        return self.decode_path == "cpu" or self.decode_device is not None

    def cached(self, sample: int) -> bool:
        """Whether ``sample``'s image (or its load error) is in the cache."""
        return sample in self._cache

    def preload(self, samples: Sequence[int]) -> None:
        """Decode the given samples not cached yet in one batch (nvJPEG) into the cache.

        A no-op on the Pillow path (it decodes one image at a time anyway), and with no cache.
        """
        if self.decode_device is None or self.cache_size <= 0:
            return
        todo = [s for s in dict.fromkeys(samples) if s not in self._cache]
        if self.decode_hook is not None:
            for s in todo:
                self.decode_hook(s)
        decoded = self._decode_gpu(todo)
        for s, got in zip(todo, decoded, strict=True):
            self._remember(s, got if isinstance(got, Image.Image) else str(got))

    def _decode_gpu(self, samples: Sequence[int]) -> list[Image.Image | CorruptImageError]:
        """nvJPEG decode of ``samples`` in one batch, their bytes read (and checked against
        the store's content digests: ImageChangedError) through the source."""
        assert self.decode_device is not None
        items: list[tuple[Any, bytes | CorruptImageError]] = []
        for s in samples:
            try:
                data: bytes | CorruptImageError = self.folder.read(s)
            except CorruptImageError as e:
                data = e
            items.append((self.folder.where(s), data))
        return decode_image_data(items, self.decode_device, self._max_pixels)

    @property
    def _max_pixels(self) -> int:
        return int(self.folder.max_image_pixels)

    def _remember(self, sample: int, got: Image.Image | str) -> None:
        self._cache[sample] = got
        self._cache.move_to_end(sample)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _load(self, sample: int) -> Image.Image | str:
        if self.decode_hook is not None:
            self.decode_hook(sample)
        if self.decode_device is not None:
            got = self._decode_gpu([sample])[0]
            return got if isinstance(got, Image.Image) else str(got)
        try:
            return self.folder.load(sample)
        except CorruptImageError as e:
            return str(e)

    def _source(self, sample: int, aug: AugParams, size: int | tuple[int, int]) -> Image.Image:
        """The image a view renders from: the cached full decode, or a draft-mode decode."""
        if not self.draft or self.decode_device is not None:
            return self.image(sample)
        try:
            return self.folder.load(sample, draft=draft_rule(aug, size))
        except CorruptImageError as e:
            raise UnreadableSampleError(str(e), sample) from None

    def params(self, slot: int, sample: int) -> ViewParams:
        """The decoded parameters of view ``slot`` of ``sample`` (the store's slot: a copy of
        slots A:B decodes its slot r as the views' slot A + r)."""
        return decode(
            self.store_seed,
            self.first_slot + slot,
            sample,
            self.num_samples,
            self.recipe,
            self.num_slots,
        )

    def image(self, sample: int) -> Image.Image:
        """Sample ``sample``'s decoded image; UnreadableSampleError when it is corrupt."""
        got = self._cache.get(sample)
        if got is not None:
            self._cache.move_to_end(sample)
        else:
            got = self._load(sample)
            if self.cache_size > 0:
                self._remember(sample, got)
        if isinstance(got, str):
            raise UnreadableSampleError(got, sample)
        return got

    def render(
        self, slot: int, sample: int, size: int | tuple[int, int] | None = None
    ) -> ReplayedView:
        """View ``slot`` of ``sample`` at ``size`` (default: the canonical size).

        Raises UnreadableSampleError naming the sample (the view's own or its partner) whose
        image cannot be decoded; the store marks such views invalid. An image whose bytes are
        not those the store recorded raises ImageChangedError (never rendered, never cached).
        """
        if size is None:
            if self.size is None:
                raise ValueError("the store records no teacher input size: pass a view size")
            size = self.size
        view = self.render_many([(slot, sample)], size)[0]
        if isinstance(view, UnreadableSampleError):
            raise view
        return view

    def render_many(
        self, keys: Sequence[tuple[int, int]], size: int | tuple[int, int]
    ) -> list[ReplayedView | UnreadableSampleError]:
        """Views ``(slot, sample)`` at ``size``, each image decoded and base-rendered once.

        A mixed view's partner is rendered as the partner's own base view (codec 2), so when
        both views of a pair are asked for, two decodes and two renders serve both. Same bytes
        as :meth:`render`; an unreadable image gives its error in place of the view.
        """
        bases: dict[tuple[int, int], np.ndarray | UnreadableSampleError] = {}

        def base(slot: int, sample: int, aug: AugParams) -> np.ndarray:
            got = bases.get((slot, sample))
            if got is None:
                try:
                    got = render_aug(self._source(sample, aug, size), aug, size)
                except UnreadableSampleError as e:
                    got = e
                bases[(slot, sample)] = got
            if isinstance(got, UnreadableSampleError):
                raise got
            return got

        out: list[ReplayedView | UnreadableSampleError] = []
        for slot, sample in keys:
            params = self.params(slot, sample)
            label = self.folder.label(sample)
            try:
                arr = base(slot, sample, params.base)
                if params.mix is None:
                    out.append(ReplayedView(_chw(arr), params, label, label, 1.0))
                    continue
                other = base(slot, params.mix.partner, params.mix.partner_aug)
            except UnreadableSampleError as e:
                out.append(e)
                continue
            mixed = mix_arrays(arr, other, params.mix)
            partner_label = self.folder.label(params.mix.partner)
            out.append(ReplayedView(_chw(mixed), params, label, partner_label, params.mix.lam))
        return out


def _chw(arr: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] numpy -> uint8 [3, H, W] tensor."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
