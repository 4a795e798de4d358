"""TensorBoard logging whose faults are one line.

A failed write (a full disk) is raised in the training process as an ``OSError`` naming the log
folder, which every command reports in one line; the writer thread's own traceback is not printed,
and no empty event file is left behind.

TensorBoard writes from a background thread: when a write fails there, the thread stores the
exception and dies (Python prints its traceback), and the next call from the training process
raises it again. :class:`Board` opens its ``SummaryWriter`` only when the first value is logged
(a run that fails before never creates an event file), turns any fault of a call into that
``OSError`` after removing the event files it created empty, and :func:`_quiet_writer_threads`
keeps the dying writer thread from printing what the training process reports.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from clipcore.fsutil import NEARLY_FULL_BYTES, fault_errno

log = logging.getLogger(__name__)

_WRITER_THREAD = "_AsyncWriterThread"  # tensorboard.summary.writer.event_file_writer's thread


def _quiet_writer_threads() -> None:
    """Install (once) a ``threading.excepthook`` quieting dying TensorBoard writer threads.

    It logs, instead of printing, the exception that kills a writer thread (it is raised again in
    the thread that logs).
    """
    previous = threading.excepthook
    if getattr(previous, "quiet_writer_threads", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == _WRITER_THREAD:
            log.debug("TensorBoard writer thread stopped: %r", args.exc_value)
            return
        previous(args)

    hook.quiet_writer_threads = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class Board:
    """A ``SummaryWriter`` of ``folder`` opened at the first value logged.

    ``add_scalar``, ``add_image``, ``flush`` and ``close`` as SummaryWriter's, each fault an
    ``OSError``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._writer: Any = None
        self._before: set[Path] = set()

    def _open(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_writer_threads()
            self._before = set(self.folder.glob("events.out.tfevents.*"))
            self._writer = self._guard(SummaryWriter, str(self.folder))
        return self._writer

    def _guard(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except (OSError, RuntimeError) as exc:
            self._drop()
            code = fault_errno(exc)
            if code is None and _nearly_full(self.folder):
                code = errno.ENOSPC
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(self.folder)) from exc

    def _drop(self) -> None:
        """Close the writer after a fault, quietly; remove the event files it left empty."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except (OSError, RuntimeError) as exc:  # the same fault again
                log.debug("closing the TensorBoard writer failed: %r", exc)
        for path in set(self.folder.glob("events.out.tfevents.*")) - self._before:
            if path.stat().st_size == 0:
                path.unlink(missing_ok=True)

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        """``SummaryWriter.add_scalar``."""
        self._guard(self._open().add_scalar, *args, **kwargs)

    def add_image(self, *args: Any, **kwargs: Any) -> None:
        """``SummaryWriter.add_image``."""
        self._guard(self._open().add_image, *args, **kwargs)

    def flush(self) -> None:
        """Write what was logged (a fault of the writer thread surfaces here at the latest)."""
        if self._writer is not None:
            self._guard(self._writer.flush)

    def close(self) -> None:
        """Flush and close (a Board never opened writes nothing)."""
        if self._writer is not None:
            self._guard(self._writer.close)
            self._writer = None


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False
