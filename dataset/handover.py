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

>>> collate = SharedBatches(slots=ring_slots(prefetch_factor=2))
>>> loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate,
...                     prefetch_factor=2, pin_memory=True)
"""

from __future__ import annotations

import math
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


class SharedBatches:
    """A loader's ``collate_fn`` that packs each batch into one reused shared-memory arena.

    In a worker: dicts (nested) of tensors, NumPy arrays, bools, ints and floats become stacked
    tensors (dtypes as ``default_collate`` gives them), all views into the next arena of the
    worker's ring; strings become lists; anything else is collated by ``default_collate``. In
    the main process (``num_workers=0``) it is ``default_collate``.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a ring needs at least one arena, got slots={slots}")
        self.slots = slots
        self._arenas: list[torch.Tensor | None] = [None] * slots
        self._turn = 0

    def __call__(self, items: list[Any]) -> Any:
        """The batch of ``items``."""
        if get_worker_info() is None or not isinstance(items[0], Mapping):
            return default_collate(items)
        leaves: list[Leaf] = []
        plain = _gather(items, (), leaves)
        slot = self._turn % self.slots
        self._turn += 1
        layout, size = _layout(leaves)
        arena = self._arenas[slot]
        if arena is None or arena.numel() < size:
            arena = torch.empty(max(size, 1), dtype=torch.uint8).share_memory_()
            self._arenas[slot] = arena
        for (_, values), place in zip(leaves, layout, strict=True):
            torch.stack(values, out=_view(arena, *place[1:]))
        return Packed(plain, arena, layout)


#: A tensor leaf of a batch: its path of keys and the items' tensors.
Leaf = tuple[tuple[str, ...], list[torch.Tensor]]
#: Where a leaf lies in an arena: its path, byte offset, dtype and batched shape.
Place = tuple[tuple[str, ...], int, torch.dtype, tuple[int, ...]]


def _layout(leaves: list[Leaf]) -> tuple[list[Place], int]:
    """Each leaf's place in an arena, and the arena's size in bytes."""
    layout, offset = [], 0
    for path, values in leaves:
        first = values[0]
        layout.append((path, offset, first.dtype, (len(values), *first.shape)))
        offset += -(-len(values) * first.numel() * first.element_size() // ALIGN) * ALIGN
    return layout, offset


class Packed(dict):
    """A batch whose tensors are views into one shared arena; it pickles the arena once.

    Unpickled (in the training process) it is a plain dict of the same keys and tensors.
    """

    def __init__(
        self,
        plain: dict[str, Any],
        arena: torch.Tensor,
        layout: list[Place],
    ) -> None:
        super().__init__(plain)
        self._arena, self._layout = arena, layout
        for path, offset, dtype, shape in layout:
            _put(self, path, _view(arena, offset, dtype, shape))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle the non-tensor values, the arena (one shared segment) and the layout."""
        plain = _without(dict(self), [path for path, *_ in self._layout])
        return _unpack, (plain, self._arena, self._layout)


def _unpack(
    plain: dict[str, Any],
    arena: torch.Tensor,
    layout: list[Place],
) -> dict[str, Any]:
    """A plain dict: ``plain`` with every leaf of ``layout`` a view into ``arena``."""
    batch = plain
    for path, offset, dtype, shape in layout:
        _put(batch, path, _view(arena, offset, dtype, shape))
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


def _view(arena: torch.Tensor, offset: int, dtype: torch.dtype, shape: tuple[int, ...]):  # noqa: ANN202
    """The (shape, dtype) tensor at byte ``offset`` of ``arena``."""
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
