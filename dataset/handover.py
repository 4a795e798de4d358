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
buffer is handed over as that buffer, not copied.

A ring's buffer crosses to the training process once: the first batch in it pickles the buffer
(its shared segment, a file descriptor passed over a socket), every later one only the buffer's
name, which the training process resolves to the mapping it kept (:class:`_Kept`, while the
collate function lives). A loader's worker sends its batches through one queue, in order, and the
training process unpickles every one it takes (also those it drops when an epoch restarts), so a
name never arrives before its buffer. Passing a descriptor costs both processes a socket
connection, an authentication and a few system calls per buffer and batch.

>>> collate = SharedBatches(slots=ring_slots(prefetch_factor=2))
>>> loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate,
...                     prefetch_factor=2, pin_memory=True)
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
import weakref
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
    """A ring of shared-memory byte buffers that one process reuses, one per batch in flight.

    Each buffer is named (:func:`_handle`), so that it is pickled whole only the first time. A
    ring copied into another process (a forked worker) allocates buffers of its own there.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a ring needs at least one arena, got slots={slots}")
        self.slots = slots
        self._buffers: list[torch.Tensor | None] = [None] * slots
        self._turn = 0
        self._pid = os.getpid()
        self._uid = uuid.uuid4().hex

    def next(self, nbytes: int) -> tuple[int, torch.Tensor]:
        """(slot, a shared uint8 buffer of at least ``nbytes``) for the next batch."""
        if self._pid != os.getpid():  # never write into the buffers of the process forked from
            self._buffers, self._pid, self._uid = [None] * self.slots, os.getpid(), uuid.uuid4().hex
        slot = self._turn % self.slots
        self._turn += 1
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            if buffer is not None:
                del _NAMED[buffer.data_ptr()]
            buffer = torch.empty(max(nbytes, 1), dtype=torch.uint8).share_memory_()
            key = (self._pid, self._uid, slot)
            _NAMED[buffer.data_ptr()] = _Named(key, uuid.uuid4().hex, weakref.ref(buffer))
            self._buffers[slot] = buffer
        return slot, buffer


#: A ring buffer's place: the process that made it, its ring, its slot.
Key = tuple[int, str, int]


@dataclasses.dataclass
class _Named:
    """A ring buffer of this process: its place, its name, the ring's tensor, whether it was sent.

    While the ring holds the tensor no other memory can have its address; once it is gone the
    entry names nothing.
    """

    key: Key
    name: str
    tensor: weakref.ref
    sent: bool = False


#: This process's ring buffers by address.
_NAMED: dict[int, _Named] = {}


@dataclasses.dataclass(frozen=True)
class _Handle:
    """A ring buffer as pickled: its place and name, and the buffer only the first time."""

    key: Key
    name: str
    buffer: torch.Tensor | None


def _handle(buffer: torch.Tensor) -> torch.Tensor | _Handle:
    """What to pickle for ``buffer``: a handle if a ring of this process made it, else itself."""
    named = _NAMED.get(buffer.data_ptr())
    if named is None or named.tensor() is None:  # not a ring's, or its ring is gone
        return buffer
    first, named.sent = not named.sent, True
    return _Handle(named.key, named.name, buffer if first else None)


class SharedBatches:
    """A loader's ``collate_fn`` that packs each batch into one reused shared-memory arena.

    ``slots``: arenas per worker (:func:`ring_slots`). The training process keeps the buffers
    each live worker sent mapped (:class:`_Kept`).

    In a worker: dicts (nested) of tensors, NumPy arrays, bools, ints and floats become stacked
    tensors (dtypes as ``default_collate`` gives them), all views into the next arena of the
    worker's ring, except leaves already stacked in a shared buffer (handed over as they are);
    strings become lists; anything else is collated by ``default_collate``. In the main process
    (``num_workers=0``) it is ``default_collate``.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._ring = SharedRing(slots)
        self._kept = _Kept()
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
        _, arena = self._ring.next(size)
        for (_, values), place in zip(copied, layout, strict=True):
            torch.stack(values, out=buffer_view(arena, *place[2:]))
        return Packed(plain, [arena, *buffers.values()], layout + stacked, self._key)


class _Kept:
    """The ring buffers the training process received, by place, kept mapped.

    Those of a process that ended go when a new buffer comes (workers of a new epoch).
    """

    def __init__(self) -> None:
        self._buffers: dict[Key, tuple[str, torch.Tensor]] = {}

    def resolve(self, handle: _Handle) -> torch.Tensor:
        """The buffer ``handle`` names: the one it carries (then kept), or the one kept for it."""
        if handle.buffer is not None:
            ended = {pid for pid, *_ in self._buffers if not _alive(pid)}
            self._buffers = {k: v for k, v in self._buffers.items() if k[0] not in ended}
            self._buffers[handle.key] = (handle.name, handle.buffer)
        kept = self._buffers.get(handle.key)
        if kept is None or kept[0] != handle.name:
            raise RuntimeError(
                "a loader worker named a shared buffer this process never received; give each "
                "DataLoader its own SharedBatches"
            )
        return kept[1]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a worker that ended was joined by its loader)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The training process's keepers, by collate function; a keeper goes with its collate function.
_KEEPERS: weakref.WeakValueDictionary[str, _Kept] = weakref.WeakValueDictionary()


#: A tensor leaf of a batch: its path of keys and the items' tensors.
Leaf = tuple[tuple[str, ...], list[torch.Tensor]]
#: Where a leaf lies: its path, the buffer (0: the arena), byte offset, dtype and batched shape.
Place = tuple[tuple[str, ...], int, int, torch.dtype, tuple[int, ...]]


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
        self, plain: dict[str, Any], buffers: list[torch.Tensor], layout: list[Place], key: str
    ) -> None:
        super().__init__(plain)
        self._buffers, self._layout, self._key = buffers, layout, key
        for path, index, offset, dtype, shape in layout:
            _put(self, path, buffer_view(buffers[index], offset, dtype, shape))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle the non-tensor values, the buffers (or their names) and the layout."""
        plain = _without(dict(self), [path for path, *_ in self._layout])
        handles = [_handle(buffer) for buffer in self._buffers]
        return _unpack, (plain, handles, self._layout, self._key)


def _unpack(
    plain: dict[str, Any],
    handles: list[torch.Tensor | _Handle],
    layout: list[Place],
    key: str,
) -> dict[str, Any]:
    """A plain dict: ``plain`` with every leaf of ``layout`` a view into its buffer.

    The collate function ``key`` keeps the ring buffers it received and resolves their names.
    """
    kept = _KEEPERS.get(key)
    buffers = []
    for handle in handles:
        if isinstance(handle, _Handle):
            if kept is None and handle.buffer is None:
                raise RuntimeError(
                    "a batch names a shared buffer, and only its loader's process can read it"
                )
            handle = handle.buffer if kept is None else kept.resolve(handle)
        buffers.append(handle)
    batch = plain
    for path, index, offset, dtype, shape in layout:
        _put(batch, path, buffer_view(buffers[index], offset, dtype, shape))
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
