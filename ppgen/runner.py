"""The one entry point: ``run(spec, out)`` runs whatever ``load_spec`` returned and writes its run folder.

A generative model's spec (``RunSpec``) trains and evaluates a model/guide pair (``ppgen.generative_run``); a
declarative Bayesian model's (``BayesRunSpec``) fits and checks a posterior (``ppgen.bayesian_run``). The
command line's ``ppgen run`` is this function.
"""

from pathlib import Path

from ppgen.errors import PpgenError
from ppgen.progress import default_progress
from ppgen.spec.bayes_run import BayesRunSpec
from ppgen.spec.schema import RunSpec

__all__ = ["run"]


def run(
    spec: RunSpec | BayesRunSpec,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    background_plots: bool = False,
    prior: bool = False,
) -> dict:
    """Run ``spec`` into the run folder ``out`` and return its metrics.

    Args:
        spec: what ``ppgen.load_spec`` returned.
        out: the run folder; it must not hold a run unless ``resume`` or ``force``.
        resume: continue an interrupted training run from its checkpoint (generative runs only); ``spec`` may
            differ from the folder's only in settings a resume can change, and those changes are recorded there.
        force: replace a run already in ``out`` (its files; others in the folder stay).
        progress: True progress bars, False none, None bars on a terminal and a progress line at a time when stderr
            is not one (``ppgen.progress``).
        background_plots: a Bayesian run draws its PNG figures in a process of its own, which goes on after this
            call returns (``ppgen run`` does this; metrics["plots"] says "background").
        prior: a prior predictive check of a Bayesian spec (``bayesian_run.run_prior``) instead of its posterior.
    """
    if isinstance(spec, BayesRunSpec):
        from ppgen.bayesian_run import run_bayes, run_prior

        if resume:
            raise PpgenError("--resume applies to training runs; a Bayesian run starts afresh")
        if prior:
            return run_prior(spec, out, background_plots=background_plots, force=force)
        return run_bayes(spec, out, progress=progress, background_plots=background_plots, force=force)
    if prior:
        raise PpgenError("--prior: a prior predictive check applies to declarative Bayesian specs ([variables])")
    from ppgen.generative_run import run_generative

    with default_progress(progress):  # evaluation, which takes no progress argument, follows the run's
        return run_generative(spec, out, resume=resume, progress=progress, force=force)
