"""Handing batches from a loader worker to the training process through reused shared memory.

PyTorch's default collation in a worker stacks every tensor of a batch into a *new* shared-memory
segment, and pickles each tensor's segment on its own (one file descriptor passed per tensor).
The segment's pages are fresh: the kernel zeroes each 4 KiB page on first touch, a few
microseconds each, about 1 MB per 256x512 training frame. :class:`SharedBatches` collates instead
into a ring of arenas that each worker allocates once and reuses: every tensor of a batch is a
view into one arena, handed over as one segment.

Reuse is safe only when the consumer is done with a batch before the worker writes its arena
again. A DataLoader with ``pin_memory=True`` copies every batch into pinned memory as it arrives
(before the training loop sees it), and, in order (``in_order=True``, the default), hands indices
to the workers in turn and sends one more only when the loop took a batch; so a worker has at
most ``prefetch_factor`` batches not yet copied, and a ring of ``prefetch_factor + 2`` arenas is
never overwritten while it is read (:func:`ring_slots`). ``train.engine.make_loader`` uses it only
there (the CUDA path); anywhere else batches are collated by PyTorch's default.

A dataset may decode a batch straight into a ring of its own (:class:`SharedRing`;
``ClipWindows.share_batches``): a leaf whose items are already consecutive views of one shared
buffer is handed over as that buffer, not copied. The training process keeps the buffers it
received from each worker's slot mapped while the collate function lives, so a buffer that comes
round again is the mapping it already has (PyTorch's cache of shared storages), not a new one whose
every page faults in on the first read.

>>> collate = SharedBatches(slots=ring_slots(prefetch_factor=2), workers=2)
>>> loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate,
...                     prefetch_factor=2, pin_memory=True)
"""

from __future__ import annotations

import math
import os
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

#: Byte alignment of each tensor in an arena (a cache line; every dtype's alignment divides it).
ALIGN = 64


def ring_slots(prefetch_factor: int) -> int:
    """Arenas a worker needs so that none is rewritten while the training process reads it."""
    return prefetch_factor + 2


class SharedRing:
    """A ring of shared-memory byte buffers that one process reuses, one per batch in flight."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a ring needs at least one arena, got slots={slots}")
        self.slots = slots
        self._buffers: list[torch.Tensor | None] = [None] * slots
        self._turn = 0

    def next(self, nbytes: int) -> tuple[int, torch.Tensor]:
        """(slot, a shared uint8 buffer of at least ``nbytes``) for the next batch."""
        slot = self._turn % self.slots
        self._turn += 1
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            buffer = torch.empty(max(nbytes, 1), dtype=torch.uint8).share_memory_()
            self._buffers[slot] = buffer
        return slot, buffer


class SharedBatches:
    """A loader's ``collate_fn`` that packs each batch into one reused shared-memory arena.

    ``slots``: arenas per worker (:func:`ring_slots`); ``workers``: the loader's, whose latest
    buffers the training process keeps mapped.

    In a worker: dicts (nested) of tensors, NumPy arrays, bools, ints and floats become stacked
    tensors (dtypes as ``default_collate`` gives them), all views into the next arena of the
    worker's ring, except leaves already stacked in a shared buffer (handed over as they are);
    strings become lists; anything else is collated by ``default_collate``. In the main process
    (``num_workers=0``) it is ``default_collate``.
    """

    def __init__(self, slots: int, workers: int = 1) -> None:
        self.slots = slots
        self._ring = SharedRing(slots)
        self._kept = _Kept(slots * workers)
        self._key = uuid.uuid4().hex
        _KEEPERS[self._key] = self._kept

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_kept": None}  # a worker keeps nothing

    def __call__(self, items: list[Any]) -> Any:
        """The batch of ``items``."""
        if get_worker_info() is None or not isinstance(items[0], Mapping):
            return default_collate(items)
        leaves: list[Leaf] = []
        plain = _gather(items, (), leaves)
        buffers: dict[int, torch.Tensor] = {}  # by address: each buffer is pickled once
        copied: list[Leaf] = []
        stacked: list[Place] = []
        for path, values in leaves:
            found = _shared_stack(values)
            if found is None:
                copied.append((path, values))
                continue
            buffer, offset = found
            buffers.setdefault(buffer.data_ptr(), buffer)
            index = 1 + list(buffers).index(buffer.data_ptr())
            stacked.append((path, index, offset, values[0].dtype, (len(values), *values[0].shape)))
        layout, size = _layout(copied)
        slot, arena = self._ring.next(size)
        for (_, values), place in zip(copied, layout, strict=True):
            torch.stack(values, out=buffer_view(arena, *place[2:]))
        sender = (self._key, os.getpid(), slot)
        return Packed(plain, [arena, *buffers.values()], layout + stacked, sender)


class _Kept:
    """The buffers the training process received last from each (worker, slot), kept mapped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffers: OrderedDict[tuple[int, int], list[torch.Tensor]] = OrderedDict()

    def keep(self, sender: tuple[int, int], buffers: list[torch.Tensor]) -> None:
        """Keep ``buffers`` for ``sender`` (worker pid, slot); the oldest beyond the limit go."""
        self._buffers[sender] = buffers
        self._buffers.move_to_end(sender)
        while len(self._buffers) > self.limit:
            self._buffers.popitem(last=False)


#: The training process's keepers, by collate function; a keeper goes with its collate function.
_KEEPERS: weakref.WeakValueDictionary[str, _Kept] = weakref.WeakValueDictionary()


#: A tensor leaf of a batch: its path of keys and the items' tensors.
Leaf = tuple[tuple[str, ...], list[torch.Tensor]]
#: Where a leaf lies: its path, the buffer (0: the arena), byte offset, dtype and batched shape.
Place = tuple[tuple[str, ...], int, int, torch.dtype, tuple[int, ...]]
#: Who sent a batch: the collate function's key, the worker's pid, the arena's slot.
Sender = tuple[str, int, int]


def _layout(leaves: list[Leaf]) -> tuple[list[Place], int]:
    """Each leaf's place in an arena, and the arena's size in bytes."""
    layout, offset = [], 0
    for path, values in leaves:
        first = values[0]
        layout.append((path, 0, offset, first.dtype, (len(values), *first.shape)))
        offset += -(-len(values) * first.numel() * first.element_size() // ALIGN) * ALIGN
    return layout, offset


def _shared_stack(values: list[torch.Tensor]) -> tuple[torch.Tensor, int] | None:
    """(the uint8 buffer, byte offset) where ``values`` already lie stacked, or None.

    Only when they are contiguous, one after the other, in one shared-memory storage.
    """
    first = values[0]
    if not first.is_shared() or first.numel() == 0:
        return None
    storage, step = first.untyped_storage(), first.numel() * first.element_size()
    for k, value in enumerate(values):
        if (
            not value.is_contiguous()
            or value.untyped_storage().data_ptr() != storage.data_ptr()
            or value.data_ptr() != first.data_ptr() + k * step
        ):
            return None
    buffer = torch.empty(0, dtype=torch.uint8).set_(storage)
    return buffer, first.storage_offset() * first.element_size()


class Packed(dict):
    """A batch whose tensors are views into shared buffers; it pickles each buffer once.

    The buffers: the collate function's arena, then those a dataset decoded into.

    Unpickled (in the training process) it is a plain dict of the same keys and tensors.
    """

    def __init__(
        self,
        plain: dict[str, Any],
        buffers: list[torch.Tensor],
        layout: list[Place],
        sender: Sender,
    ) -> None:
        super().__init__(plain)
        self._buffers, self._layout, self._sender = buffers, layout, sender
        for path, index, offset, dtype, shape in layout:
            _put(self, path, buffer_view(buffers[index], offset, dtype, shape))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle the non-tensor values, the buffers (shared segments) and the layout."""
        plain = _without(dict(self), [path for path, *_ in self._layout])
        return _unpack, (plain, self._buffers, self._layout, self._sender)


def _unpack(
    plain: dict[str, Any],
    buffers: list[torch.Tensor],
    layout: list[Place],
    sender: Sender | None = None,
) -> dict[str, Any]:
    """A plain dict: ``plain`` with every leaf of ``layout`` a view into its buffer.

    The sender's collate function, if it lives in this process, keeps the buffers mapped.
    """
    batch = plain
    for path, index, offset, dtype, shape in layout:
        _put(batch, path, buffer_view(buffers[index], offset, dtype, shape))
    if sender is not None and (kept := _KEEPERS.get(sender[0])) is not None:
        kept.keep(sender[1:], buffers)
    return batch


def _gather(items: list[Any], path: tuple[str, ...], leaves: list[Leaf]) -> dict[str, Any]:
    """The batch of mappings ``items`` without its tensor leaves, which go to ``leaves``.

    A tensor leaf's place in the returned dict is filled by :class:`Packed`.
    """
    out: dict[str, Any] = {}
    for key, first in items[0].items():
        values = [item[key] for item in items]
        if isinstance(first, Mapping):
            out[key] = _gather(values, (*path, key), leaves)
        elif isinstance(first, str):
            out[key] = values
        else:
            tensors = _tensors(values)
            if tensors is None:
                out[key] = default_collate(values)
            else:
                leaves.append(((*path, key), tensors))
    return out


def _tensors(values: list[Any]) -> list[torch.Tensor] | None:
    """``values`` as tensors of one shape (typed as ``default_collate`` types them), or None."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        tensors = values
    elif isinstance(first, np.ndarray) and first.dtype != object:
        tensors = [torch.from_numpy(np.asarray(v)) for v in values]
    elif isinstance(first, bool | int | float):
        dtype = torch.float64 if isinstance(first, float) else None
        tensors = list(torch.tensor(values, dtype=dtype))
    else:
        return None
    shape, dtype = tensors[0].shape, tensors[0].dtype
    if any(t.shape != shape or t.dtype != dtype for t in tensors):
        return None  # default_collate says what does not stack
    return tensors


def buffer_view(
    arena: torch.Tensor, offset: int, dtype: torch.dtype, shape: tuple[int, ...]
) -> torch.Tensor:
    """The (shape, dtype) tensor at byte ``offset`` of the uint8 buffer ``arena``."""
    nbytes = math.prod(shape) * dtype.itemsize
    return arena[offset : offset + nbytes].view(dtype).view(shape)


def _put(batch: dict[str, Any], path: tuple[str, ...], value: torch.Tensor) -> None:
    """Set ``batch[path[0]][path[1]]...`` to ``value``."""
    for key in path[:-1]:
        batch = batch[key]
    batch[path[-1]] = value


def _without(batch: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """A copy of ``batch`` (nested dicts copied) without the values at ``paths``."""
    out = {k: _without(v, []) if isinstance(v, dict) else v for k, v in batch.items()}
    for path in paths:
        node = out
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return out
