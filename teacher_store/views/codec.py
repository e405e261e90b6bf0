"""View codec: ``(store_seed, slot, sample) -> seed -> augmentation parameters``.

Everything here is a pure function of its arguments: a counter-based SplitMix64 generator
(:class:`Stream`) replaces any global RNG, so a view's parameters never depend on batch size,
sampler, worker count, world size or process. Bump :data:`CODEC_VERSION` whenever
:func:`decode` output changes for any input.

Cross-machine exactness. Python floats are IEEE-754 doubles and ``+ - * /`` and ``sqrt`` are
correctly rounded everywhere, but libm's ``exp``/``log``/``cos`` may differ by an ulp between
platforms. So the transcendental functions used here (:func:`det_exp`, :func:`det_log`,
:func:`det_cos`, :func:`det_sin`) are built from those exact operations only and are therefore
bit-identical on every IEEE machine. On top of that every float parameter is quantized onto the
binary grid ``k * 2**-24`` (:func:`quantize`), so stored or JSON-printed parameters are short and
exact, and even a foreign implementation that is off by an ulp would land on the same grid point
except with probability ~2**-28 per value.

Codec 2 pairs samples for mixing: view slot r's partners are a seeded involution
(:func:`pair_partner`), and a partner is rendered as its own base view, so one decode and one
render of each image serve both views of a pair.

Pure Python (no numpy, no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from teacher_store.views.recipe import Recipe

CODEC_VERSION = 2  # 2: partners are a seeded involution over tile pairs (see pair_partner)
"""Version of the seed → view-parameters codec; stores record it and readers refuse others."""

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64 increment (odd, 2**64 / golden ratio)
QUANT_BITS = 24  # every float parameter is a multiple of 2**-QUANT_BITS
PAIR_TILE = 1024  # the pairing's tile (part of the codec; generation's default chunk_samples)

# timm RandAugment "inc1" op list (magnitude increases strength for every op).
RANDAUG_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
# Ops whose magnitude carries a random sign (timm's _randomly_negate).
SIGNED_OPS = frozenset(
    {"Rotate", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY"}
    | {"TranslateXRel", "TranslateYRel"}
)
# Ops without a magnitude: their stored magnitude is 0.0.
UNARY_OPS = frozenset({"AutoContrast", "Equalize", "Invert"})
RANDAUG_OP_PROB = 0.5  # timm applies each chosen op with probability 0.5
ERASE_AREA = (0.02, 1 / 3)  # timm RandomErasing defaults
ERASE_LOG_RATIO = (-1.2039728043259361, 1.2039728043259361)  # log(0.3), log(1/0.3)

# Sub-stream tags: independent draws for the base view, the mixing decision, the pairing.
_BASE, _MIX, _PAIR = 1, 2, 4
FEISTEL_ROUNDS = 8  # 4 measured a bias towards neighbouring tiles on 64 tiles
REST_TAG = 0x2545F4914F6CDD1D  # key tag of the pairing's rest group

_LN2 = 0.6931471805599453
_LN2_HI = 6.93147180369123816490e-01  # Cody-Waite split of ln 2 (fdlibm): k * hi is exact
_LN2_LO = 1.90821492927058770002e-10
_TWO_PI = 6.283185307179586


# ---------------------------------------------------------------- libm-free transcendental math
def det_exp(x: float) -> float:
    """``exp(x)`` from exactly rounded operations only (bit-identical on every IEEE machine)."""
    if x != x:
        return x
    if x > 709.0:
        return math.inf
    if x < -745.0:
        return 0.0
    k = round(x / _LN2)
    r = (x - k * _LN2_HI) - k * _LN2_LO  # |r| <= 0.35
    total = 1.0
    for n in range(20, 0, -1):  # Horner form of the Taylor series
        total = 1.0 + total * r / n
    return math.ldexp(total, k)


def det_log(x: float) -> float:
    """Natural log of ``x > 0`` from exactly rounded operations only."""
    if not x > 0.0:
        raise ValueError(f"det_log needs x > 0, got {x!r}")
    if x == math.inf:
        return x
    m, e = math.frexp(x)  # exact: x = m * 2**e, 0.5 <= m < 1
    if m < 0.7071067811865476:
        m, e = m * 2.0, e - 1
    s = (m - 1.0) / (m + 1.0)  # |s| <= 0.172, log(m) = 2 atanh(s)
    s2, poly = s * s, 0.0
    for n in range(39, 1, -2):  # Horner form of s2/3 + s2**2/5 + ...
        poly = (poly + 1.0 / n) * s2
    return (e * _LN2_HI + (e * _LN2_LO + 2.0 * s * poly)) + 2.0 * s


def _reduce(x: float) -> float:
    return x - _TWO_PI * round(x / _TWO_PI)  # into [-pi, pi]


def det_cos(x: float) -> float:
    """``cos(x)`` for moderate ``|x|`` from exactly rounded operations only."""
    r = _reduce(x)
    r2, term, total = r * r, 1.0, 1.0
    for n in range(2, 40, 2):
        term = -term * r2 / ((n - 1) * n)
        total += term
    return total


def det_sin(x: float) -> float:
    """``sin(x)`` for moderate ``|x|`` from exactly rounded operations only."""
    r = _reduce(x)
    r2, term, total = r * r, r, r
    for n in range(3, 41, 2):
        term = -term * r2 / ((n - 1) * n)
        total += term
    return total


def quantize(x: float) -> float:
    """Round ``x`` to the nearest multiple of ``2**-24`` (half to even; exact in binary)."""
    return math.ldexp(round(math.ldexp(x, QUANT_BITS)), -QUANT_BITS)


# ------------------------------------------------------------------------- counter-based hashing
def mix64(x: int) -> int:
    """SplitMix64 finalizer: a bijective 64-bit integer mix (input masked to 64 bits)."""
    z = x & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _check_u64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MASK64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


def view_seed(store_seed: int, slot: int, sample: int) -> int:
    """The 64-bit seed of view ``slot`` of ``sample``: a keyed chain of SplitMix64 mixes.

    Order matters (``view_seed(s, a, b) != view_seed(s, b, a)`` in general); each step is a
    bijection in its new argument, so two samples of one slot never share a seed.
    """
    h = mix64(_check_u64("store_seed", store_seed) ^ 0x5851F42D4C957F2D)
    h = mix64(h + (_check_u64("slot", slot) + 1) * GOLDEN_GAMMA)
    return mix64(h ^ mix64((_check_u64("sample", sample) + 1) * GOLDEN_GAMMA))


class Stream:
    """Counter-based random stream: draw ``k`` is ``mix64(key + (k + 1) * GOLDEN_GAMMA)``.

    ``key`` is ``mix64(seed ^ mix64(tag))``, so streams with different tags are independent.
    The state is only ``(key, counter)``: there is no hidden or global RNG state.
    """

    __slots__ = ("counter", "key")

    def __init__(self, seed: int, tag: int = 0) -> None:
        self.key = mix64(_check_u64("seed", seed) ^ mix64(_check_u64("tag", tag)))
        self.counter = 0

    def next_u64(self) -> int:
        """The next raw 64-bit draw."""
        self.counter += 1
        return mix64(self.key + self.counter * GOLDEN_GAMMA)

    def uniform(self) -> float:
        """Uniform float in [0, 1) with 53 random bits."""
        return (self.next_u64() >> 11) * 1.1102230246251565e-16  # 2**-53

    def randint(self, n: int) -> int:
        """Integer in [0, n) by multiply-shift (bias <= n / 2**64)."""
        if n < 1:
            raise ValueError(f"randint needs n >= 1, got {n}")
        return (self.next_u64() * n) >> 64

    def normal(self) -> float:
        """Standard normal draw (Box-Muller, cosine branch; uses two uniforms)."""
        u1 = 1.0 - self.uniform()  # (0, 1]
        u2 = self.uniform()
        return math.sqrt(-2.0 * det_log(u1)) * det_cos(_TWO_PI * u2)

    def gamma(self, alpha: float) -> float:
        """Gamma(alpha, 1) draw (Marsaglia-Tsang; alpha < 1 via the U**(1/alpha) boost)."""
        if not alpha > 0.0:
            raise ValueError(f"gamma needs alpha > 0, got {alpha!r}")
        if alpha < 1.0:
            g = self.gamma(alpha + 1.0)
            u = 1.0 - self.uniform()
            return g * det_exp(det_log(u) / alpha)
        d = alpha - 1.0 / 3.0
        c = 1.0 / math.sqrt(9.0 * d)
        while True:
            x = self.normal()
            v = 1.0 + c * x
            if v <= 0.0:
                continue
            v = v * v * v
            u = 1.0 - self.uniform()
            if u < 1.0 - 0.0331 * (x * x) * (x * x):
                return d * v
            if det_log(u) < 0.5 * x * x + d * (1.0 - v + det_log(v)):
                return d * v

    def beta(self, a: float, b: float) -> float:
        """Beta(a, b) draw as ``X / (X + Y)`` of two gamma draws."""
        x, y = self.gamma(a), self.gamma(b)
        if x + y == 0.0:  # both underflowed (tiny alphas): the limit is Bernoulli(a / (a + b))
            return 1.0 if self.uniform() < a / (a + b) else 0.0
        return x / (x + y)


# ------------------------------------------------------------------------------- parameter types
@dataclass(frozen=True)
class AugParams:
    """One image's augmentation. The crop is raw draws, so the box fits any image size.

    ``area``: crop area fraction; ``log_ratio``: log of the crop's w/h; ``cx``/``cy``: position
    uniforms in [0, 1) (0 = flush left/top, 1 = flush right/bottom); ``ops``: applied RandAugment
    ops as (name, magnitude on timm's 0..10 scale, signed for the symmetric ops);
    ``jitter``: brightness, contrast, saturation factors; ``erase``: (left, top, right, bottom)
    in normalized output coordinates plus an RGB fill colour.
    """

    area: float
    log_ratio: float
    cx: float
    cy: float
    flip: bool
    ops: tuple[tuple[str, float], ...] = ()
    jitter: tuple[float, float, float] | None = None
    erase: tuple[float, float, float, float, int, int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "area": self.area,
            "log_ratio": self.log_ratio,
            "cx": self.cx,
            "cy": self.cy,
            "flip": self.flip,
            "ops": [[name, mag] for name, mag in self.ops],
            "jitter": None if self.jitter is None else list(self.jitter),
            "erase": None if self.erase is None else list(self.erase),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugParams:
        """Inverse of :meth:`to_dict`."""
        ops = tuple((str(name), float(mag)) for name, mag in d.get("ops", ()))
        unknown = [name for name, _ in ops if name not in RANDAUG_OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment ops {unknown}")
        jitter, erase = d.get("jitter"), d.get("erase")
        return cls(
            area=float(d["area"]),
            log_ratio=float(d["log_ratio"]),
            cx=float(d["cx"]),
            cy=float(d["cy"]),
            flip=bool(d["flip"]),
            ops=ops,
            jitter=None
            if jitter is None
            else (float(jitter[0]), float(jitter[1]), float(jitter[2])),
            erase=None if erase is None else _erase_tuple(erase),
        )


def _floats3(v: Any) -> tuple[float, float, float]:
    if len(v) != 3:
        raise ValueError(f"expected 3 numbers, got {v!r}")
    return (float(v[0]), float(v[1]), float(v[2]))


def _floats4(v: Any) -> tuple[float, float, float, float]:
    if len(v) != 4:
        raise ValueError(f"expected 4 numbers, got {v!r}")
    return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))


def _erase_tuple(e: Any) -> tuple[float, float, float, float, int, int, int]:
    if len(e) != 7:
        raise ValueError(f"erase must have 7 entries (box + RGB), got {len(e)}")
    return (float(e[0]), float(e[1]), float(e[2]), float(e[3]), int(e[4]), int(e[5]), int(e[6]))


@dataclass(frozen=True)
class MixParams:
    """Per-sample mixing: partner sample id, mode, base-image weight ``lam`` and partner view.

    For cutmix ``box`` is (left, top, right, bottom) in normalized output coordinates and ``lam``
    is ``1 - box area``.
    """

    partner: int
    mode: Literal["mixup", "cutmix"]
    lam: float
    box: tuple[float, float, float, float] | None
    partner_aug: AugParams

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "partner": self.partner,
            "mode": self.mode,
            "lam": self.lam,
            "box": None if self.box is None else list(self.box),
            "partner_aug": self.partner_aug.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixParams:
        """Inverse of :meth:`to_dict`."""
        mode = d["mode"]
        if mode not in ("mixup", "cutmix"):
            raise ValueError(f"mix mode must be 'mixup' or 'cutmix', got {mode!r}")
        box = d.get("box")
        return cls(
            partner=int(d["partner"]),
            mode=mode,
            lam=float(d["lam"]),
            box=None
            if box is None
            else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            partner_aug=AugParams.from_dict(d["partner_aug"]),
        )


@dataclass(frozen=True)
class ViewParams:
    """Everything needed to replay one view: its seed, address, base augmentation and mixing."""

    seed: int
    slot: int
    sample: int
    base: AugParams
    mix: MixParams | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the seed is a plain int; JSON keeps 64-bit ints exact in Python)."""
        return {
            "codec_version": CODEC_VERSION,
            "seed": self.seed,
            "slot": self.slot,
            "sample": self.sample,
            "base": self.base.to_dict(),
            "mix": None if self.mix is None else self.mix.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewParams:
        """Inverse of :meth:`to_dict`; refuses parameters written by another codec version."""
        version = d.get("codec_version", CODEC_VERSION)
        if version != CODEC_VERSION:
            raise ValueError(f"view params from codec version {version}, this is {CODEC_VERSION}")
        mix = d.get("mix")
        return cls(
            seed=int(d["seed"]),
            slot=int(d["slot"]),
            sample=int(d["sample"]),
            base=AugParams.from_dict(d["base"]),
            mix=None if mix is None else MixParams.from_dict(mix),
        )


# ------------------------------------------------------------------------------------ geometry
def crop_box(aug: AugParams, width: int, height: int) -> tuple[float, float, float, float]:
    """Crop box ``(left, top, right, bottom)`` in source pixels (floats) for a W x H image.

    RandomResizedCrop semantics: target area ``A = area * W * H``, aspect ``r = exp(log_ratio)``,
    ``w = sqrt(A r)``, ``h = sqrt(A / r)``. A side that does not fit is clamped to the image and
    the other side grows to keep the area (so the sampled area fraction is exact and ``area=1``
    is the whole image whatever the ratio). The box is placed at ``cx * (W - w)``,
    ``cy * (H - h)``, i.e. uniformly over the positions where it fits.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0.0 < aug.area <= 1.0:
        raise ValueError(f"crop area fraction must be in (0, 1], got {aug.area!r}")
    if not abs(aug.log_ratio) <= 20.0:
        raise ValueError(f"crop log aspect ratio must be in [-20, 20], got {aug.log_ratio!r}")
    target = aug.area * width * height
    ratio = det_exp(aug.log_ratio)
    w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
    if w > width:
        w, h = float(width), min(float(height), target / width)
    elif h > height:
        w, h = min(float(width), target / height), float(height)
    left = aug.cx * (width - w)
    top = aug.cy * (height - h)
    return (left, top, left + w, top + h)


# ------------------------------------------------------------------------------------- decoding
def _uniform(st: Stream, lo: float, hi: float) -> float:
    return lo + (hi - lo) * st.uniform()


def _draw_ops(st: Stream, r: Recipe) -> tuple[tuple[str, float], ...]:
    ops = []
    for _ in range(r.randaug_n):  # timm: choice with replacement, each op applied with p=0.5
        name = RANDAUG_OPS[st.randint(len(RANDAUG_OPS))]
        applied = st.uniform() < RANDAUG_OP_PROB
        mag = min(max(r.randaug_m + r.randaug_mstd * st.normal(), 0.0), r.randaug_mmax)
        negative = st.uniform() < 0.5
        if not applied:
            continue
        if name in UNARY_OPS:
            mag = 0.0
        elif name in SIGNED_OPS and negative:
            mag = -mag
        ops.append((name, quantize(mag)))
    return tuple(ops)


def _draw_jitter(st: Stream, strength: float) -> tuple[float, float, float] | None:
    if strength <= 0.0:
        return None
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    b, c, s = (quantize(_uniform(st, lo, hi)) for _ in range(3))
    return (b, c, s)


def _draw_erase(st: Stream, prob: float) -> tuple[float, float, float, float, int, int, int] | None:
    if not st.uniform() < prob:
        return None
    area = _uniform(st, *ERASE_AREA)
    ratio = det_exp(_uniform(st, *ERASE_LOG_RATIO))
    w, h = min(1.0, math.sqrt(area * ratio)), min(1.0, math.sqrt(area / ratio))
    left, top = quantize(st.uniform() * (1.0 - w)), quantize(st.uniform() * (1.0 - h))
    right, bottom = min(1.0, quantize(left + w)), min(1.0, quantize(top + h))
    red, green, blue = st.randint(256), st.randint(256), st.randint(256)
    return (left, top, right, bottom, red, green, blue)


def draw_aug(st: Stream, r: Recipe) -> AugParams:
    """Draw one image's :class:`AugParams` from ``st`` under a resolved recipe ``r``."""
    area = quantize(_uniform(st, r.scale[0], r.scale[1]))
    log_ratio = quantize(_uniform(st, det_log(r.ratio[0]), det_log(r.ratio[1])))
    cx, cy = quantize(st.uniform()), quantize(st.uniform())
    flip = st.uniform() < r.hflip
    return AugParams(
        area=max(area, 2.0**-QUANT_BITS),
        log_ratio=log_ratio,
        cx=min(cx, 1.0),
        cy=min(cy, 1.0),
        flip=flip,
        ops=_draw_ops(st, r),
        jitter=_draw_jitter(st, r.color_jitter),
        erase=_draw_erase(st, r.erase_prob),
    )


def _cutmix_box(st: Stream, lam: float) -> tuple[float, float, float, float]:
    """timm ``rand_bbox`` in normalized coordinates: side ``sqrt(1 - lam)``, centre uniform."""
    cut = math.sqrt(1.0 - lam)
    cx, cy = st.uniform(), st.uniform()
    left, right = max(0.0, cx - cut / 2), min(1.0, cx + cut / 2)
    top, bottom = max(0.0, cy - cut / 2), min(1.0, cy + cut / 2)
    return (quantize(left), quantize(top), quantize(right), quantize(bottom))


# ------------------------------------------------------------------------------------- pairing
def pair_key(store_seed: int, slot: int) -> int:
    """The key of view slot ``slot``'s pairing (one involution per slot)."""
    return mix64(view_seed(store_seed, slot, 0) ^ mix64(_PAIR))


def _half_bits(n: int) -> int:
    return max(1, ((n - 1).bit_length() + 1) // 2)  # 4**h >= n


def _feistel(key: int, x: int, h: int, inverse: bool) -> int:
    mask = (1 << h) - 1
    left, right = x >> h, x & mask
    rounds = range(FEISTEL_ROUNDS - 1, -1, -1) if inverse else range(FEISTEL_ROUNDS)
    for r in rounds:
        if inverse:
            left, right = right ^ (mix64(key + (r + 1) * GOLDEN_GAMMA ^ left) & mask), left
        else:
            left, right = right, left ^ (mix64(key + (r + 1) * GOLDEN_GAMMA ^ right) & mask)
    return (left << h) | right


def permute(key: int, x: int, n: int, inverse: bool = False) -> int:
    """A keyed bijection of ``[0, n)`` (a Feistel network with cycle walking) or its inverse."""
    h = _half_bits(n)
    x = _feistel(key, x, h, inverse)
    while x >= n:  # cycle walking: stays a bijection of [0, n)
        x = _feistel(key, x, h, inverse)
    return x


def pair_partner(key: int, sample: int, num_samples: int, tile: int) -> int | None:
    """The mixing partner of ``sample`` under pairing ``key`` (None when it has none).

    A seeded involution (``i`` mixes with ``j`` and ``j`` with ``i``) with one exception: with
    an odd count, one sample (the rest group's last) mixes one way with a paired one. Full
    tiles of ``tile`` samples are paired by a keyed permutation (never a tile with itself),
    and a keyed bijection matches the samples of two paired tiles, so partners are spread over
    the dataset and a tile pair's targets are two blocks. The rest (an odd tile and the partial
    last tile, < 2 tiles) pairs within itself.
    """
    tiles = num_samples // tile - (num_samples // tile) % 2
    edge = tiles * tile
    if sample < edge:
        t, o = divmod(sample, tile)
        rank = permute(key, t, tiles)
        mate = permute(key, rank ^ 1, tiles, inverse=True)
        sub = mix64(key ^ mix64((rank >> 1) + 1))
        return mate * tile + permute(sub, o, tile, inverse=bool(rank & 1))
    m = num_samples - edge
    rest = mix64(key ^ REST_TAG)
    if m < 2:  # a lone last sample mixes one way with a paired one (none: no other sample)
        return permute(rest, 0, edge) if edge else None
    p = permute(rest, sample - edge, m)
    q = m - 2 if (m % 2 and p == m - 1) else p ^ 1
    return edge + permute(rest, q, m, inverse=True)


def _draw_mix(
    store_seed: int, seed: int, r: Recipe, slot: int, sample: int, num_samples: int
) -> MixParams | None:
    st = Stream(seed, _MIX)
    use_mixup, use_cutmix = r.mixup_alpha > 0.0, r.cutmix_alpha > 0.0
    if not st.uniform() < r.mix_prob or num_samples < 2 or not (use_mixup or use_cutmix):
        return None
    cutmix = st.uniform() < r.switch_prob if (use_mixup and use_cutmix) else use_cutmix
    alpha = r.cutmix_alpha if cutmix else r.mixup_alpha
    lam = st.beta(alpha, alpha)
    partner = pair_partner(pair_key(store_seed, slot), sample, num_samples, PAIR_TILE)
    assert partner is not None  # num_samples >= 2
    box = None
    if cutmix:
        box = _cutmix_box(st, lam)
        lam = 1.0 - (box[2] - box[0]) * (box[3] - box[1])
    # The partner's image is rendered as the partner's own base view: one render serves both.
    partner_seed = view_seed(store_seed, slot, partner)
    return MixParams(
        partner=partner,
        mode="cutmix" if cutmix else "mixup",
        lam=quantize(lam),
        box=box,
        partner_aug=draw_aug(Stream(partner_seed, _BASE), r),
    )


def decode(
    store_seed: int, slot: int, sample: int, num_samples: int, recipe: Recipe, num_slots: int
) -> ViewParams:
    """The parameters of view ``slot`` of ``sample`` (of ``num_samples``), the recipe's
    schedule spanning ``num_slots`` slots (a store's ``schedule_views``).

    A pure function of its arguments, using ``recipe.at_slot(slot, num_slots)``; a slot at or
    past ``num_slots`` (appended by growing the store) takes the knobs of slot
    ``num_slots - 1``: the last stage extends, so no existing slot changes meaning.
    """
    _check_u64("num_samples", num_samples)
    if not 0 <= _check_u64("sample", sample) < num_samples:
        raise ValueError(f"sample {sample} is out of range for {num_samples} samples")
    resolved = recipe.at_slot(min(slot, num_slots - 1) if slot >= 0 else slot, num_slots)
    seed = view_seed(store_seed, slot, sample)
    base = draw_aug(Stream(seed, _BASE), resolved)
    mix = _draw_mix(store_seed, seed, resolved, slot, sample, num_samples)
    return ViewParams(seed=seed, slot=slot, sample=sample, base=base, mix=mix)
