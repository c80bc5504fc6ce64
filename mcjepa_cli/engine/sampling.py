"""Deterministic step-indexed sampling: resume continues the exact data order, ranks get shards.

Global position ``p = step * global_batch + rank * local_batch + j`` maps to sample
``perm_e[p mod n]`` with ``e = p // n`` and ``perm_e`` a permutation drawn from (seed, e).
Each sample also gets a key (its global position) from which its augmentation randomness is
derived, so a resumed run sees exactly the samples and augmentations of an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for steps ``start .. total-1``, this rank's list of (index, key) pairs."""

    def __init__(self, n: int, local_batch: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, total_steps: int = 1) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n = n
        self.local_batch = local_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self.total_steps = total_steps
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def batch(self, step: int) -> list[tuple[int, int]]:
        base = step * self.local_batch * self.world_size + self.rank * self.local_batch
        out = []
        for j in range(self.local_batch):
            p = base + j
            out.append((int(self._permutation(p // self.n)[p % self.n]), p))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


class KeyedDataset(Dataset):
    """Calls ``dataset[index]`` with global RNGs seeded from (seed, key), restoring them after.

    Any augmentation drawing from torch's or Python's global RNG becomes a pure function of the
    sample's key, in the main process or in a worker alike, without disturbing the caller's RNG.
    Datasets with ``keyed_items = True`` take ``(index, key)`` themselves (``MixedDataset``).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]):
        index, key = item
        if getattr(self.dataset, "keyed_items", False):
            return self.dataset[(index, key)]  # the dataset derives its randomness from the key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            sample_seed = (self.seed * 0x9E3779B1 + key * 2654435761 + 12345) % (2**63)
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(state)
