"""Batches of pairs of similar length for sentence-transformers' trainers (imported by the training jobs only: it
loads torch and sentence-transformers)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class LengthGroupedBatches(DefaultBatchSampler):
    """Pairs of similar length batched together: transformers' `get_length_grouped_indices` (what `group_by_length`
    uses: shuffled mega-batches of 50 batches, each sorted by length) over the pairs' characters, reshuffled each
    epoch from the seed. Random batches pad every pair to the batch's longest: 1.63x the real tokens of the
    judges' faithfulness rows (16 pairs, at most 160 tokens). The dataset's first two columns are the pair."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: torch.Generator | None = None, seed: int = 0) -> None:
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        a, b = dataset.column_names[:2]
        self.lengths = [len(x) + len(y) for x, y in zip(dataset[a], dataset[b], strict=True)]

    def __iter__(self) -> Iterator[list[int]]:
        rng = torch.Generator().manual_seed(self.seed + self.epoch)
        order = get_length_grouped_indices(self.lengths, self.batch_size, generator=rng)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch
