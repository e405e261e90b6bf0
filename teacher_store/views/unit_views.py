"""Generation's views: one DataLoader item per step of a shard unit's view order, rendered.

:class:`UnitViews` walks the units a rank owns in their view order (pair order by default:
a view and its mixing partner's view are rendered together), reads images ahead (a
:class:`~teacher_store.images.prefetch.ReadAhead` source) and, on the nvJPEG path, decodes a
window of steps' images at once. Unreadable images make invalid views; any other error is
carried back in the item (:class:`ViewsItem`), for the generation loop to raise in one line.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from teacher_store.errors import portable
from teacher_store.images.dataset import printable_path
from teacher_store.images.prefetch import ReadAhead
from teacher_store.images.source import ImageSource
from teacher_store.store.layout import ShardUnit
from teacher_store.store.schema import StoreAttrs
from teacher_store.views.pairing import unit_view_order
from teacher_store.views.recipe import Recipe
from teacher_store.views.replay import Replayer, UnreadableSampleError

__all__ = ["DECODE_WINDOW", "UnitViews", "ViewsItem"]

DECODE_WINDOW = 32  # nvJPEG path: base images decoded per batch (with their partners)


@dataclass(frozen=True)
class ViewsItem:
    """One step's rendered views, as a DataLoader worker hands them to the generation loop."""

    unit: int  # position in this rank's work list
    keys: tuple[tuple[int, int], ...]  # the step's views (slot, sample), in teacher order
    views: torch.Tensor  # [len(keys), 3, H, W] uint8
    ok: torch.Tensor  # [len(keys)] bool
    bad: tuple[tuple[int, str, str], ...]  # (sample, its key, error)
    # A fatal one-line error (an image replaced during the job, a shard gone, storage refused):
    # raised by the main process (from a DataLoader worker it would lose its type and message).
    failure: ValueError | None = None


class UnitViews(torch.utils.data.Dataset[ViewsItem]):
    """One item per step of a unit's view order (:func:`unit_view_order`), rendered.

    In pair order a step renders a view and its partner's view together (``render_many``):
    one decode and one base render of each image serve both views of the pair.
    """

    def __init__(
        self,
        folder: ImageSource,
        attrs: StoreAttrs,
        recipe: Recipe,
        units: list[ShardUnit],
        device: torch.device | None = None,
        order: str = "pairs",
        decode_hook: Callable[[int], None] | None = None,
        first_slot: Callable[[ShardUnit], int] | None = None,
    ):
        self.folder, self.attrs, self.order = folder, attrs, order
        # A growth computes a mixed unit's new slots only (teacher_store.store.grow).
        self.first_slot = first_slot or (lambda u: u.slot_start)
        self.size = int(attrs.teacher["input_size"][1])
        # One step per sample of each unit (some steps empty); a unit's steps are computed
        # when first needed, so a rank's work list costs its units, not its views.
        self.offsets = np.cumsum([0] + [u.stop - u.start for u in units]).tolist()
        self._orders: dict[int, list[list[tuple[int, int]]]] = {}  # the last 2 units'
        self._ahead: dict[int, list[int]] = {}  # step -> the samples it reads (read-ahead)
        self.units = units
        self.window = DECODE_WINDOW
        views = max((u.slot_stop - u.slot_start for u in units), default=1)
        # Pillow: 64 images (a step's own image stays while its partners pass). nvJPEG: a
        # decode window's images and all their partners, decoded in one batch.
        cache = 64 if device is None else max(64, self.window * (1 + 2 * views))
        self.replay = Replayer(
            folder, attrs, recipe, cache_size=cache, device=device, decode_hook=decode_hook
        )

    def step(self, k: int) -> tuple[int, list[tuple[int, int]]]:
        """Item ``k``: (position of its unit in the work list, its views (slot, sample))."""
        u = bisect.bisect_right(self.offsets, k) - 1
        order = self._orders.get(u)
        if order is None:
            unit = self.units[u]
            slots = range(self.first_slot(unit), unit.slot_stop)
            samples = range(unit.start, unit.stop)
            order = unit_view_order(
                self.attrs.store_seed, self.attrs.num_samples, slots, samples, self.order
            )
            if len(self._orders) >= 2:  # this unit and the next (read-ahead crosses into it)
                self._orders.pop(next(iter(self._orders)))
            self._orders[u] = order
        return u, order[k - self.offsets[u]]

    def _read_ahead(self, k: int) -> None:
        """Name the images this process reads in its coming steps (k, k + W, ...: a DataLoader
        hands its W workers the steps in turn) to the read-ahead, in the order they are read:
        each view's image, then its partner's. A wrong guess costs a read, never a byte."""
        if not isinstance(self.folder, ReadAhead):
            return
        info = torch.utils.data.get_worker_info()
        stride = info.num_workers if info is not None else 1
        steps = range(k, min(len(self), k + stride * 2 * self.folder.threads), stride)
        self._ahead = {j: v for j, v in self._ahead.items() if j >= k}
        for j in steps:
            if j not in self._ahead:
                reads = []
                for slot, sample in self.step(j)[1]:
                    mix = self.replay.params(slot, sample).mix
                    reads += [sample] if mix is None else [sample, mix.partner]
                self._ahead[j] = reads
        self.folder.want(s for j in steps for s in self._ahead[j] if not self.replay.cached(s))

    def _preload(self, k: int) -> None:
        """nvJPEG path: decode the next window of steps' images and their partners at once."""
        keys = self.step(k)[1]
        if self.replay.decode_device is None or not keys or self.replay.cached(keys[0][1]):
            return
        stop = min(len(self), k + self.window)
        window = [key for j in range(k, stop) for key in self.step(j)[1]]
        partners = [p.mix.partner for s in window if (p := self.replay.params(*s)).mix]
        self.replay.preload([s for _, s in window] + partners)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, k: int) -> ViewsItem:
        u, keys = self.step(k)
        views = torch.zeros(len(keys), 3, self.size, self.size, dtype=torch.uint8)
        ok = torch.zeros(len(keys), dtype=torch.bool)
        bad = []
        try:
            self._read_ahead(k)
            self._preload(k)
            rendered = self.replay.render_many(keys, self.size)
        except ValueError as e:  # unreadable images come back in ``rendered``: this is fatal
            return ViewsItem(u, tuple(keys), views, ok, (), portable(e))
        for j, got in enumerate(rendered):
            if isinstance(got, UnreadableSampleError):  # a bad sample: the view is invalid
                bad.append((got.sample, printable_path(self.folder.key(got.sample)), str(got)))
                continue
            views[j], ok[j] = got.pixels, True
        return ViewsItem(u, tuple(keys), views, ok, tuple(bad))
