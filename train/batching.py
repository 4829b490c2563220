"""Batches of pairs of similar length for sentence-transformers' trainers (imported by the training jobs only: it
loads torch and sentence-transformers)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class LengthGroupedBatches(DefaultBatchSampler):
    """Pairs of similar length batched together: transformers' `get_length_grouped_indices` (what `group_by_length`
    uses: the pairs shuffled, cut into mega-batches, each sorted by length) over the pairs' characters, the batches
    then served in random order, reshuffled each epoch from the seed. The dataset's first two columns are the pair.

    Random batches pad every pair to the batch's longest: 1.65x the real tokens of the judges' faithfulness rows
    (16 pairs, at most 160 tokens); mega-batches of 4 batches pad 1.13x, of 50 (transformers' default) 1.01x. But
    the faithfulness rows are minimal pairs (a sentence and the same sentence altered, equally long): sorted within
    a mega-batch of 800 rows, a quarter of them shared a batch with their twin, and training stalled (validation
    average precision at step 250 of 581, bf16: 0.76 with the batches longest first, 0.81 shuffled, against 0.94 in
    random batches). In 64 rows a twin is rarely drawn (under 1% a pair) and the judge learns as in random batches
    (0.941 at step 250)."""

    mega_batch_mult = 4

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: torch.Generator | None = None, seed: int = 0) -> None:
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        a, b = dataset.column_names[:2]
        self.lengths = [len(x) + len(y) for x, y in zip(dataset[a], dataset[b], strict=True)]

    def __iter__(self) -> Iterator[list[int]]:
        rng = torch.Generator().manual_seed(self.seed + self.epoch)
        order = get_length_grouped_indices(self.lengths, self.batch_size, mega_batch_mult=self.mega_batch_mult,
                                           generator=rng)
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        # the batches in random order: in the order of their mega-batch (longest first, 50 in a row) the judge
        # saw long rows (mostly merged-claim negatives) for dozens of steps, then short ones, and stalled
        # (faithfulness validation average precision 0.76 at step 250 against 0.95 in random batches)
        for i in torch.randperm(len(batches), generator=rng).tolist():
            yield batches[i]
