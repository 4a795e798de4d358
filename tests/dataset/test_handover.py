"""Batches handed from loader workers through reused shared arenas: the same batches as PyTorch's
default collation, one shared segment per batch (or the buffer a window's images were read into),
arenas reused only around the ring, kept mapped by the training process while its loader lives."""

from __future__ import annotations

import io
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torch.utils.data._utils import worker

from dataset import AugmentConfig, ClipWindows
from dataset.handover import SharedBatches, ring_slots
from train.context import Context
from train.engine import PREFETCH, make_loader


class Mixed(Dataset):
    """Items of every kind a window holds: tensors, arrays, flags, numbers, strings, a dict."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int) -> dict:
        return {
            "u8": torch.full((2, 3, 5), i, dtype=torch.uint8),
            "f32": np.arange(7, dtype=np.float32) * i,
            "f64": torch.tensor([0.25 * i], dtype=torch.float64),
            "flag": i % 3 == 0,
            "index": i,
            "scale": 0.5 * i,
            "clip_id": f"clip-{i}",
            "nested": {"pose": torch.eye(4) * i},
        }


def _assert_equal(got: object, want: object) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype
        assert torch.equal(got, want)
    elif isinstance(want, dict):
        assert type(got) is dict and set(got) == set(want)
        for key in want:
            _assert_equal(got[key], want[key])
    else:
        assert got == want


def _reference(ds: Dataset, batch: int) -> list:
    n = len(ds)
    return [
        default_collate([ds[i] for i in range(s, min(s + batch, n))]) for s in range(0, n, batch)
    ]


@pytest.fixture
def in_worker():  # noqa: ANN201
    """Run the test body as if in loader worker 0."""
    worker._worker_info = worker.WorkerInfo(id=0, num_workers=1, seed=0, dataset=None)
    yield
    worker._worker_info = None


def test_workers_hand_over_what_default_collation_gives() -> None:
    ds = Mixed()
    collate = SharedBatches(ring_slots(PREFETCH))
    loader = DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=collate, prefetch_factor=PREFETCH
    )
    for _ in range(2):  # twice: the second pass writes into arenas used before
        got = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()} for b in loader]
        assert len(got) == 6  # the last batch of 3 takes an arena of its own size
        for g, want in zip(got, _reference(ds, 4), strict=True):
            _assert_equal(g, want)


@pytest.mark.parametrize("read_into_shared", [False, True])
def test_real_windows_are_handed_over_unchanged(split_dataset, read_into_shared) -> None:  # noqa: ANN001
    ds = ClipWindows(split_dataset, "train", window=3, augment=AugmentConfig(), augment_on="device")
    want = _reference(ds, 2)
    if read_into_shared:
        ds.share_batches(ring_slots(PREFETCH))
    collate = SharedBatches(ring_slots(PREFETCH))
    loader = DataLoader(
        ds, batch_size=2, num_workers=2, collate_fn=collate, prefetch_factor=PREFETCH
    )
    for _ in range(2):  # twice: the second pass reads into buffers used before
        got = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()} for b in loader]
        for g, w in zip(got, want, strict=True):
            _assert_equal(g, w)


def test_images_read_into_shared_memory_are_handed_over_uncopied(split_dataset, in_worker) -> None:  # noqa: ANN001
    ds = ClipWindows(split_dataset, "train", window=3, augment=AugmentConfig(), augment_on="device")
    ds.share_batches(2)
    items = ds.__getitems__([0, 1])
    images = ("rgb_u8", "tags", "depth_bits")
    assert all(item[key].is_shared() for item in items for key in images)
    batch = SharedBatches(2)(items)
    for key in images:  # the batch is the buffer the items were read into
        assert batch[key].data_ptr() == items[0][key].data_ptr()
        assert batch[key][1].data_ptr() == items[1][key].data_ptr()
    arena = batch["intrinsics"].untyped_storage()
    assert arena.nbytes() < batch["tags"].nbytes  # the arena holds only the small leaves
    got = pickle.loads(_pickled(batch))
    _assert_equal(got, default_collate([ds[0], ds[1]]))


def test_the_training_process_keeps_what_live_workers_sent_mapped_while_the_loader_lives() -> None:
    import gc

    from dataset import handover

    collate = SharedBatches(ring_slots(PREFETCH))
    loader = DataLoader(
        Mixed(), batch_size=4, num_workers=2, collate_fn=collate, prefetch_factor=PREFETCH
    )
    for _batch in loader:
        pass
    kept = handover._KEEPERS[collate._key]
    first = set(kept._buffers)
    assert len(first) == 6  # each worker sent 3 of the 6 batches, each from a slot
    for _batch in loader:  # new workers: theirs replace those of the ended ones
        pass
    assert len(kept._buffers) == 6 and not first & set(kept._buffers)
    key = collate._key
    del loader, collate, kept, _batch
    gc.collect()
    assert key not in handover._KEEPERS  # gone with its collate function


def test_persistent_workers_keep_handing_over_by_name() -> None:
    ds = Mixed()
    loader = DataLoader(
        ds,
        batch_size=4,
        num_workers=2,
        collate_fn=SharedBatches(ring_slots(PREFETCH)),
        prefetch_factor=PREFETCH,
        persistent_workers=True,
    )
    want = _reference(ds, 4)
    for epoch in range(3):  # the same workers: every slot named after its first batch
        for k, batch in enumerate(loader):
            _assert_equal(batch, want[k])
            if epoch == 1 and k == 1:
                break  # an epoch left early: its batches in flight are still taken in order


def test_a_ring_buffer_is_pickled_once_then_named(split_dataset) -> None:  # noqa: ANN001
    from dataset import handover

    ds = ClipWindows(split_dataset, "train", window=3, augment=AugmentConfig(), augment_on="device")
    ds.share_batches(2)
    collate = SharedBatches(2)
    worker._worker_info = worker.WorkerInfo(id=0, num_workers=1, seed=0, dataset=None)
    try:
        sent = [_pickled(collate(ds.__getitems__([k % 2, k % 2 + 2]))) for k in range(5)]
    finally:
        worker._worker_info = None
    handles = [pickle.loads(p, fix_imports=False) for p in sent]  # the training process's view
    for k, got in enumerate(handles):
        want = default_collate([ds[k % 2], ds[k % 2 + 2]])
        _assert_equal(got, want)
    storages = [b"rebuild_storage" in p for p in sent]  # what passes a shared segment
    assert storages == [True, True, False, False, False]  # once per slot, then names
    kept = handover._KEEPERS[collate._key]
    assert len(kept._buffers) == 4  # 2 arenas and the dataset's 2 image buffers


def test_a_named_buffer_the_training_process_does_not_keep_is_refused(in_worker) -> None:  # noqa: ANN001
    from dataset import handover

    collate = SharedBatches(2)
    items = [Mixed()[i] for i in range(2)]
    first, second = _pickled(collate(items)), _pickled(collate(items))
    _pickled(collate(items))  # the first slot again: now named
    named = _pickled(collate(items))
    assert b"rebuild_storage" in first and b"rebuild_storage" not in named
    del handover._KEEPERS[collate._key]
    with pytest.raises(RuntimeError, match="only its loader's process"):
        pickle.loads(named)
    pickle.loads(first)  # a buffer that travels whole needs no keeper
    other = SharedBatches(2)
    handover._KEEPERS[collate._key] = other._kept  # a keeper that never received it
    with pytest.raises(RuntimeError, match="its own SharedBatches"):
        pickle.loads(named)
    del second


def test_memory_a_gone_ring_left_is_never_taken_for_its_buffer(in_worker) -> None:  # noqa: ANN001
    import gc

    from dataset import handover

    ring = handover.SharedRing(1)
    _, buffer = ring.next(64)
    address = buffer.data_ptr()
    assert isinstance(handover._handle(buffer), handover._Handle)
    del ring, buffer
    gc.collect()
    reused = torch.zeros(64, dtype=torch.uint8)  # as if new memory had the ring's address
    stale = handover._NAMED[address]
    handover._NAMED[reused.data_ptr()] = stale
    try:
        assert handover._handle(reused) is reused  # pickled whole, never named
    finally:
        del handover._NAMED[reused.data_ptr()]


def test_a_forked_ring_never_writes_into_its_parents_buffers(in_worker) -> None:  # noqa: ANN001
    from dataset.handover import SharedRing

    ring = SharedRing(2)
    _, parents = ring.next(64)
    ring._pid = -1  # as a copy of this ring in a forked worker sees it
    _, own = ring.next(64)
    assert own.data_ptr() != parents.data_ptr()


def _pickled(batch: object) -> bytes:
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(batch)
    return buffer.getvalue()


def test_a_batch_is_one_shared_segment_unpickled_as_a_plain_dict(in_worker) -> None:  # noqa: ANN001
    ds = Mixed()
    batch = SharedBatches(2)([ds[i] for i in range(4)])
    got = pickle.loads(_pickled(batch))
    _assert_equal(got, default_collate([ds[i] for i in range(4)]))
    tensors = [got["u8"], got["f32"], got["f64"], got["flag"], got["index"], got["nested"]["pose"]]
    storages = {t.untyped_storage().data_ptr() for t in tensors}
    assert len(storages) == 1 and tensors[0].is_shared()


def test_arenas_come_back_only_around_the_ring(in_worker) -> None:  # noqa: ANN001
    ds, slots = Mixed(), 3
    collate = SharedBatches(slots)
    arenas = [
        collate([ds[i] for i in range(4)])["u8"].untyped_storage().data_ptr() for _ in range(7)
    ]
    assert len(set(arenas[:slots])) == slots  # every batch in flight has its own
    assert arenas[slots:] == arenas[: 7 - slots]  # batch k + slots reuses batch k's


def test_outside_a_worker_it_is_default_collation() -> None:
    batch = SharedBatches(2)([Mixed()[i] for i in range(3)])
    assert type(batch) is dict and not batch["u8"].is_shared()


def test_only_a_pinned_loader_reuses_arenas(split_dataset) -> None:  # noqa: ANN001
    ds = ClipWindows(split_dataset, "train", window=3)
    kw = {"training": True, "epoch": 0, "seed": 0, "num_workers": 2}
    cpu = make_loader(ds, 2, ctx=Context(torch.device("cpu")), **kw)
    cuda = make_loader(ds, 2, ctx=Context(torch.device("cuda")), **kw)
    assert not isinstance(cpu.collate_fn, SharedBatches)  # the caller may keep a CPU batch
    assert cuda.pin_memory and isinstance(cuda.collate_fn, SharedBatches)
    assert cuda.collate_fn.slots > cuda.prefetch_factor  # the batches in flight and one more


def test_only_a_pinned_loaders_windows_are_read_into_shared_memory(
    split_dataset, in_worker
) -> None:  # noqa: ANN001
    kw = {"training": True, "epoch": 0, "seed": 0, "num_workers": 2}
    shared = {}
    for device in ("cpu", "cuda"):
        ds = ClipWindows(
            split_dataset, "train", window=3, augment=AugmentConfig(), augment_on="device"
        )
        make_loader(ds, 2, ctx=Context(torch.device(device)), **kw)
        shared[device] = ds.__getitems__([0, 1])[0]["rgb_u8"].is_shared()
    assert shared == {"cpu": False, "cuda": True}


def test_a_ring_needs_an_arena() -> None:
    with pytest.raises(ValueError, match="at least one arena"):
        SharedBatches(0)
