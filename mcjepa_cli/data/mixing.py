"""Mixing several pretraining sources with per-source repetition counts, with per-sample
randomness keyed by (seed, key) and the recipe's bad-data policy (``on_error``: stop or skip).

A *source* is anything with ``name``, ``describe``, ``__len__`` and ``load(index)``; ``load`` is
deterministic (no randomness) and raises ``UserError`` naming the file when a sample cannot be
read. ``MixedDataset`` lays the sources end to end, each repeated ``repeat`` times, and passes
every loaded sample through a transform that receives the sample's own ``torch.Generator``.

Indexing (how resume stays exact):
- ``ds[(index, key)]`` - the form the step sampler (``engine.sampling.StepBatchSampler``) yields;
  the randomness is a function of (seed, key) only, and the key is the sample's global position
  in the run, so every draw of the same index gets fresh augmentations and a resumed run gets
  the same ones as an uninterrupted run.
- ``ds[index]`` - randomness from (seed, epoch, index); call ``set_epoch(e)`` between epochs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mcjepa_cli.data.augment import make_generator
from mcjepa_cli.errors import UserError

log = logging.getLogger("mcjepa_cli.data")

ON_ERROR_CHOICES = ("stop", "skip")
MAX_CONSECUTIVE_SKIPS = 64  # on_error=skip gives up when this many samples in a row fail


class Source(Protocol):
    """A list of raw samples read from disk (or rendered), without randomness."""

    name: str  # e.g. "sintel", shown in logs
    scan_skipped: int  # unreadable files dropped while listing/decoding (on_error=skip)

    def __len__(self) -> int: ...

    def load(self, index: int) -> Any: ...

    def describe(self) -> str: ...


def check_on_error(value: str, key: str = "data.on_error") -> str:
    """Validate the bad-data policy: ``stop`` (exit 2 naming the file) or ``skip`` (count it)."""
    if value not in ON_ERROR_CHOICES:
        raise UserError(key, f"expected one of {', '.join(ON_ERROR_CHOICES)}, got {value!r}")
    return value


class _WorkerUserError(UserError):
    """A ``UserError`` raised inside a DataLoader worker that survives the trip to the main process.

    torch's DataLoader re-raises a worker's exception as ``type(exc)(traceback_text)``; a plain
    ``UserError`` cannot be rebuilt from one string, so it would surface as a ``RuntimeError``
    (exit 1, traceback) instead of the one-line exit 2. In the worker this subclass's message is
    its two fields as tagged JSON (so they appear in the traceback text), and torch's one-string
    rebuild in the main process parses them back into an ordinary-looking ``UserError``.
    """

    _TAG = "mcjepa-user-error:"

    def __init__(self, culprit: str, expected: str | None = None) -> None:
        if expected is None:  # rebuilt by torch.utils.data from the formatted traceback
            culprit, expected = self._parse(str(culprit))
        super().__init__(culprit, expected)

    @classmethod
    def _parse(cls, text: str) -> tuple[str, str]:
        for line in reversed(text.splitlines()):
            at = line.find(cls._TAG)
            if at >= 0:
                culprit, expected = json.loads(line[at + len(cls._TAG) :])
                return str(culprit), str(expected)
        return "DataLoader worker", text  # not ours: keep the whole text

    @classmethod
    def wrap(cls, err: UserError) -> _WorkerUserError:
        out = cls(err.culprit, err.expected)
        out.args = (
            cls._TAG + json.dumps([err.culprit, err.expected]),
        )  # the traceback's last line
        return out


class SkipCounter:
    """Counts skipped samples across DataLoader worker processes.

    The counts live in a shared-memory tensor with one slot per worker (slot 0 = the main
    process), so workers never race on a slot and the main process reads the total.
    """

    SLOTS = 257

    def __init__(self) -> None:
        self._counts = torch.zeros(self.SLOTS, dtype=torch.int64).share_memory_()

    def add(self, n: int = 1) -> None:
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % (self.SLOTS - 1)
        self._counts[slot] += n

    def total(self) -> int:
        return int(self._counts.sum())


class MixedDataset(Dataset):
    """Sources laid end to end, source i repeated ``repeats[i]`` times.

    Global index ``g`` falls in source i's block; its sample is ``sources[i].load((g - offset_i)
    % len_i)``. Each item is ``transform(raw_sample, generator)``.

    Args:
        sources: the sources (each non-empty).
        repeats: repetition count per source (>= 1).
        transform: ``(raw, torch.Generator) -> item``.
        seed: base seed of the per-sample randomness.
        on_error: ``stop`` re-raises the ``UserError`` of an unreadable sample (exit 2 naming the
            file); ``skip`` counts it (``skipped()``) and serves the next sample instead.
    """

    # kind of dataset, mixed into every sample's seed so that two datasets built with the same
    # seed (flow pairs and images) never share augmentation randomness
    stream = 0

    def __init__(
        self,
        sources: Sequence[Source],
        repeats: Sequence[int],
        transform: Callable[[Any, torch.Generator], Any],
        *,
        seed: int,
        on_error: str = "stop",
    ) -> None:
        if len(sources) != len(repeats):
            raise ValueError(f"got {len(sources)} sources but {len(repeats)} repeat counts")
        self.sources = list(sources)
        self.repeats = [int(r) for r in repeats]
        self.transform = transform
        self.seed = int(seed)
        self.on_error = check_on_error(on_error)
        self.epoch = 0
        self.skips = SkipCounter()
        self._warned: set[str] = set()
        blocks = [len(s) * r for s, r in zip(self.sources, self.repeats, strict=True)]
        self.offsets = torch.tensor([0, *blocks]).cumsum(0).tolist()  # block starts, then total

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Select the randomness of plain integer indexing (``ds[index]``) for epoch ``epoch``."""
        self.epoch = int(epoch)

    def skipped(self) -> int:
        """Samples skipped as unreadable (``on_error: skip``) so far, in all worker processes."""
        return self.skips.total() + sum(int(s.scan_skipped) for s in self.sources)

    def locate(self, index: int) -> tuple[int, int]:
        """Map a global index to (source number, index within the source)."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        lo, hi = 0, len(self.sources) - 1
        while lo < hi:  # last block whose start is <= index
            mid = (lo + hi + 1) // 2
            if self.offsets[mid] <= index:
                lo = mid
            else:
                hi = mid - 1
        return lo, (index - self.offsets[lo]) % len(self.sources[lo])

    def source_counts(self) -> list[dict[str, Any]]:
        """One row per source for the run log: name, items, repeat, share of the mix."""
        total = max(1, len(self))
        return [
            {
                "name": s.name,
                "items": len(s),
                "repeat": r,
                "share": len(s) * r / total,
                "location": s.describe(),
            }
            for s, r in zip(self.sources, self.repeats, strict=True)
        ]

    def __getitem__(self, item: int | tuple[int, int] | list[int]) -> Any:
        if isinstance(item, (tuple, list)):
            index, key = int(item[0]), int(item[1])
            gen = make_generator(self.seed, self.stream, 1, key)
        else:
            index = int(item)
            gen = make_generator(self.seed, self.stream, 0, self.epoch, index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        last: UserError | None = None
        for attempt in range(MAX_CONSECUTIVE_SKIPS):
            src, local = self.locate((index + attempt) % n)
            try:
                raw = self.sources[src].load(local)
            except UserError as err:
                if self.on_error == "stop":
                    raise (
                        _WorkerUserError.wrap(err) if get_worker_info() is not None else err
                    ) from None
                self.skips.add()
                if err.culprit not in self._warned:
                    self._warned.add(err.culprit)
                    log.warning(
                        "skipping unreadable sample (on_error=skip): %s: %s",
                        err.culprit,
                        err.expected,
                    )
                last = err
                continue
            return self.transform(raw, gen)
        assert last is not None
        err = UserError(
            last.culprit,
            f"{MAX_CONSECUTIVE_SKIPS} unreadable samples in a row even with "
            f"on_error=skip (last: {last.expected}); check the dataset",
        )
        raise (_WorkerUserError.wrap(err) if get_worker_info() is not None else err) from None


class PathTable:
    """Many file paths stored compactly: one byte buffer plus an offsets array (NumPy).

    A Python list of a million ``Path`` objects costs hundreds of MB and is copied page by page
    into every forked DataLoader worker as reference counts change; two NumPy arrays are not.

    Args:
        base: folder the entries are relative to.
        relative: entries relative to ``base`` (use ``from_paths`` for full paths).
    """

    def __init__(self, base: str | Path, relative: Sequence[str]) -> None:
        self.base = Path(base)
        encoded = [os.fsencode(r) for r in relative]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    @classmethod
    def from_paths(cls, base: str | Path, paths: Sequence[str | Path]) -> PathTable:
        """A table of full (or ``base``-relative) paths, stored relative to ``base``."""
        return cls(base, [os.path.relpath(p, base) for p in paths])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> Path:
        lo, hi = int(self._offsets[index]), int(self._offsets[index + 1])
        return self.base / os.fsdecode(self._buffer[lo:hi].tobytes())
