"""Minibatches: a seeded order for each epoch, and the ELBO's rescaling from a batch to the data set."""

import numpy as np
import torch
from pyro.poutine.messenger import Messenger

from ppgen.plates import DATA_PLATE

__all__ = ["epoch_order", "ScaleDataPlate"]


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of range(num_examples) used in ``epoch``: a pure function of (seed, epoch), so a
    resumed run visits examples in the same order as an uninterrupted one."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(num_examples, generator=generator)


class ScaleDataPlate(Messenger):
    """Scale every sample site inside the ``"data"`` plate by num_data / (the plate's full size).

    A model written as ``pyro.plate("data", len(x))`` and run on a batch of B examples then contributes
    num_data / B times its batch log-density: an unbiased estimate of the full-data ELBO, with sites
    outside the plate (global latents) counted once. A plate that already subsamples
    (``pyro.plate("data", num_data, subsample=...)``) has full size num_data and is left as it is.
    """

    def __init__(self, num_data: int):
        super().__init__()
        self.num_data = num_data

    def _process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        for frame in msg["cond_indep_stack"]:
            if frame.name == DATA_PLATE:
                msg["scale"] = msg["scale"] * (self.num_data / (frame.full_size or frame.size))
                return
