"""The one convention ppgen relies on: examples live in ``pyro.plate("data", N)``.

``inspect_plates`` reads, from one traced run of a model/guide pair, how deeply its plates nest,
whether every sample site sits inside the data plate (local latents, so bounds factorize per example)
or some do not (global latents, so bounds are joint over the batch), and which discrete sites are marked
for enumeration (``infer={"enumerate": "parallel"}`` or ``config_enumerate``), which the trainer and the
evaluator sum out exactly rather than sample.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ppgen.errors import PpgenError

__all__ = ["DATA_PLATE", "PlateStructure", "inspect_plates"]

DATA_PLATE = "data"


@dataclass(frozen=True)
class PlateStructure:
    """max_plate_nesting: plates nested at most (Pyro's sense); per_example: every site is in the data plate;
    enumerated: the latent sites marked for enumeration, in model or guide; enumerated_globally: those of them
    outside the data plate."""

    max_plate_nesting: int
    per_example: bool
    enumerated: tuple[str, ...] = ()
    enumerated_globally: tuple[str, ...] = ()


def inspect_plates(model: Callable, guide: Callable, *data: torch.Tensor) -> PlateStructure:
    """Trace guide(*data) and model(*data) once and read off their plate structure.

    Raises PpgenError when there is no vectorized ``"data"`` plate, or when it does not hold exactly the
    batch's examples (a plate that subsamples cannot give per-example figures).
    """
    guide_trace = poutine.trace(guide).get_trace(*data)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*data)
    sites = [
        site
        for trace in (model_trace, guide_trace)
        for site in prune_subsample_sites(trace).nodes.values()
        if site["type"] == "sample"
    ]
    data_frames = [f for site in sites for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_frames:
        raise PpgenError(f"the model has no pyro.plate({DATA_PLATE!r}, ...) over the examples")
    for frame in data_frames:
        if frame.dim is None:
            raise PpgenError(f"the {DATA_PLATE!r} plate must be vectorized: use it as a context manager")
        if frame.size != data[0].shape[0]:
            raise PpgenError(
                f"the {DATA_PLATE!r} plate has size {frame.size} but the batch has {data[0].shape[0]} examples;"
                " every example of the batch must be inside the plate (no subsampling)"
            )
    nesting = max(-f.dim for site in sites for f in site["cond_indep_stack"] if f.dim is not None)
    in_data_plate = [any(f.name == DATA_PLATE for f in site["cond_indep_stack"]) for site in sites]
    marked = [
        (site["name"], inside)
        for site, inside in zip(sites, in_data_plate)
        if not site["is_observed"] and site["infer"].get("enumerate") in ("parallel", "sequential")
    ]
    enumerated = tuple(dict.fromkeys(name for name, _ in marked))
    enumerated_globally = tuple(dict.fromkeys(name for name, inside in marked if not inside))
    return PlateStructure(nesting, all(in_data_plate), enumerated, enumerated_globally)
