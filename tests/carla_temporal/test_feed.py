"""``FrameFeed``: frames in order with clip markers; a retried clip is skipped, a lost server is
reconnected within the budget and otherwise raised to the consumer; closing stops the thread."""

from __future__ import annotations

import numpy as np
import pytest

from carla_temporal.feed import FrameFeed
from clipcore.errors import RetryClip, ServerLost
from clipcore.records import Frame


class FlakyBackend:
    """Clips of 3 frames; ``fail`` maps a clip index to the exception raised after its first
    frame (every time, or ``once``)."""

    def __init__(self, fail: dict[int, Exception], once: bool = True) -> None:
        self.fail, self.once, self.restarts = dict(fail), once, []

    def restart(self, attempt: int = 1) -> None:
        self.restarts.append(attempt)

    def record_clip(self, index, on_frame=None):  # noqa: ANN001, ANN201
        for k in range(3):
            on_frame(
                Frame(np.zeros((4, 4, 3), np.uint8), None, None, None, None, 10 * index + k, 0.0)
            )
            if k == 0 and index in self.fail:
                raise (self.fail.pop(index) if self.once else self.fail[index])


def _take(feed: FrameFeed, n: int) -> list:
    items = []
    try:
        for kind, value in feed:
            items.append((kind, value if kind == "clip" else value.frame))
            if len(items) == n:
                break
    finally:
        feed.close()
    return items


def test_frames_in_order_with_clip_markers():
    feed = FrameFeed(FlakyBackend({}))
    assert _take(feed, 6) == [
        ("clip", 0),
        ("frame", 0),
        ("frame", 1),
        ("frame", 2),
        ("clip", 1),
        ("frame", 10),
    ]
    assert not feed.thread.is_alive()


def test_retried_clip_is_skipped_and_lost_server_reconnected():
    backend = FlakyBackend({0: RetryClip("sensor timeout"), 1: ServerLost("gone")})
    items = _take(FrameFeed(backend, max_restarts=1), 6)
    assert items == [
        ("clip", 0),
        ("frame", 0),
        ("clip", 1),
        ("frame", 10),
        ("clip", 2),
        ("frame", 20),
    ]
    assert backend.restarts == [1]


def test_server_that_stays_down_reaches_the_consumer():
    backend = FlakyBackend({0: ServerLost("gone"), 1: ServerLost("gone"), 2: ServerLost("gone")})
    feed = FrameFeed(backend, max_restarts=2)
    with pytest.raises(ServerLost, match="gone"):
        _take(feed, 100)
    assert backend.restarts == [1, 2] and not feed.thread.is_alive()
