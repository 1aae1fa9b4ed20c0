"""Simulation-based calibration of an inference method on a declarative model (``ppgen sbc``).

Each replicate draws the latent variables and the observed data from the model's prior predictive,
fits the posterior with the ``[inference]`` method given the simulated data, and ranks the true values
among the posterior draws (``ppgen.evaluate.sbc``). Replicates run in worker processes: each worker
compiles the spec itself, so only the spec's path and settings cross process boundaries.
"""

import functools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ppgen.evaluate.sbc import SBCResult, run_sbc
from ppgen.files import write_text_atomic

__all__ = ["run_calibration", "simulate_from_spec", "fit_from_spec"]


@functools.lru_cache(maxsize=4)
def _workflow(path: str, inference: str | None, overrides: tuple[str, ...]):
    from ppgen.workflow import load_workflow

    return load_workflow(path, inference=inference, overrides=overrides)[:2]


def simulate_from_spec(seed: int, *, path: str, inference: str | None, overrides: tuple[str, ...]):
    """(true latent values, data with simulated observations) from one prior predictive draw."""
    model, _ = _workflow(path, inference, overrides)
    draw = model.prior_predictive(1, seed)
    parameters = {name: draw[name][0] for name in model.latent_names}
    data = {key: draw[name][0] for name, key in model.observed.items()}
    return parameters, data


def fit_from_spec(data: dict, seed: int, *, path: str, inference: str | None, overrides: tuple[str, ...]):
    """Posterior draws {latent: [draws, ...]} (chains concatenated) given simulated ``data``."""
    from ppgen.workflow import infer

    model, workflow = _workflow(path, inference, overrides)
    workflow = workflow.model_copy(update={"inference": workflow.inference.model_copy(update={"seed": seed})})
    draws = infer(model, workflow, data=data)
    return {
        name: draws.posterior[name].reshape(-1, *draws.posterior[name].shape[2:]) for name in model.latent_names
    }


def run_calibration(
    path: str | Path,
    out: str | Path,
    *,
    inference: str | Path | None = None,
    overrides: Iterable[str] = (),
    replicates: int = 100,
    num_draws: int = 99,
    workers: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> SBCResult:
    """Run SBC and write ``sbc.json`` and ``sbc.png`` (rank histograms) to ``out``; returns the result.

    num_draws: L posterior draws ranked per replicate, spread evenly over the method's draws (thinning).
    """
    from ppgen.evaluate.sbc_plots import plot_rank_histograms

    settings = dict(path=str(path), inference=None if inference is None else str(inference), overrides=tuple(overrides))
    _workflow(**settings)  # spec mistakes surface here, once, before any worker starts
    result = run_sbc(
        functools.partial(simulate_from_spec, **settings),
        functools.partial(fit_from_spec, **settings),
        replicates,
        num_draws,
        seed,
        workers=workers,
        progress=progress,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sbc.json", json.dumps(result.to_json(), indent=2, default=_plain) + "\n")
    plot_rank_histograms(result, out / "sbc.png")
    return result


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else float(value)
