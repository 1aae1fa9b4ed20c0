"""Per-step diagnostics of the Langevin kernels as ArviZ ``sample_stats``: ``LangevinInfoRecorder`` is a ``hook_fn``
for ``pyro.infer.MCMC`` that keeps each sampling step's ``LangevinInfo``; ``stack_infos`` turns one chain's infos into
arrays with one transfer from the chain's device per statistic."""

import numpy as np
import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ppgen.errors import PpgenError
from ppgen.samplers.langevin import LangevinInfo

__all__ = ["LangevinInfoRecorder", "stack_infos"]


class LangevinInfoRecorder:
    """A ``hook_fn`` for ``pyro.infer.MCMC`` that keeps ``kernel.last_info`` of every sampling (not warm-up) step.

    ``MCMC(kernel, ..., hook_fn=recorder)``; after ``run``, ``recorder.sample_stats()`` gives arrays
    [num_chains, num_samples] named as ArviZ's ``sample_stats``. Hooks run where the chain runs: chains in worker
    processes (``num_chains > 1`` with enough CPUs) are not seen.
    """

    def __init__(self):
        self.infos: dict[int, list[LangevinInfo]] = {}

    def __call__(self, kernel: MCMCKernel, params: dict, stage: str, i: int) -> None:
        if not stage.startswith("Sample"):
            return
        chain = int(stage[stage.index("[") + 1 : stage.index("]")]) if "[" in stage else 0
        self.infos.setdefault(chain, []).append(kernel.last_info)

    def sample_stats(self) -> dict[str, np.ndarray]:
        """acceptance_rate, step_size, lp (float64) and accepted (bool), each [num_chains, num_samples]."""
        if not self.infos:
            raise PpgenError("no sampling steps were recorded: pass the recorder as MCMC(..., hook_fn=recorder)")
        chains = [stack_infos(self.infos[chain]) for chain in sorted(self.infos)]
        return {key: np.stack([chain[key] for chain in chains]) for key in chains[0]}


def stack_infos(infos: list[LangevinInfo]) -> dict[str, np.ndarray]:
    """One chain's step diagnostics as ArviZ ``sample_stats``: acceptance_rate, step_size, lp (float64) and accepted
    (bool), each [num_steps], with one transfer from the chain's device per statistic."""
    fields = {"acceptance_rate": "accept_prob", "step_size": "step_size", "lp": "log_density", "accepted": "accepted"}
    stats = {key: torch.stack([getattr(info, field) for info in infos]).cpu().numpy() for key, field in fields.items()}
    return {key: value.astype(bool if key == "accepted" else np.float64) for key, value in stats.items()}
