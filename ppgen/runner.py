"""The one entry point: ``run(spec, out)`` runs whatever ``load_spec`` returned and writes its run folder.

A generative model's spec (``RunSpec``) trains and evaluates a model/guide pair (``ppgen.generative_run``); a
declarative Bayesian model's (``BayesRunSpec``) fits and checks a posterior (``ppgen.bayesian_run``). The
command line's ``ppgen run`` is this function.
"""

from pathlib import Path

from ppgen.errors import PpgenError
from ppgen.spec.bayes_run import BayesRunSpec
from ppgen.spec.schema import RunSpec

__all__ = ["run"]


def run(
    spec: RunSpec | BayesRunSpec,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    background_plots: bool = False,
) -> dict:
    """Run ``spec`` into the run folder ``out`` and return its metrics.

    Args:
        spec: what ``ppgen.load_spec`` returned.
        out: the run folder; it must not hold a run unless ``resume``.
        resume: continue an interrupted training run from its checkpoint (generative runs only).
        progress: show progress bars (None: when the output is a terminal).
        background_plots: a Bayesian run draws its PNG figures in a process of its own, which goes on after this
            call returns (``ppgen run`` does this; metrics["plots"] says "background").
    """
    if isinstance(spec, BayesRunSpec):
        from ppgen.bayesian_run import run_bayes

        if resume:
            raise PpgenError("--resume applies to training runs; a Bayesian run starts afresh")
        return run_bayes(spec, out, progress=progress is not False, background_plots=background_plots)
    from ppgen.generative_run import run_generative

    return run_generative(spec, out, resume=resume, progress=progress)
