"""Torch's CPU thread count for one stage: one thread per process by default.

Why: on a few shared cores, torch's default (one intra-op thread per core) oversubscribes them as
soon as a second process runs beside it, and its threads then spin against each other
(docs/measurements.md). Training, open-loop and closed-loop evaluation, the regression baseline
and DAgger collection (its driver policy) each take a ``threads`` setting and run inside
:func:`cpu_threads`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["check_threads", "cpu_threads"]


def check_threads(threads: int | None) -> None:
    """A config's ``threads``: None (torch's default) or at least 1."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1 or omitted for torch's default, got {threads}")


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None, or a CUDA machine: unchanged), then restore."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None and not torch.cuda.is_available():
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
