"""``StepSites``: the Pyro handler that names a time plate's step-t sites ``name__t`` (``ppgen.models.time_steps``)."""

from pyro.poutine.messenger import Messenger

from ppgen.models.time_steps import step_site

__all__ = ["StepSites"]


class StepSites(Messenger):
    """Renames the sample sites run inside it to their step's names; ``sampled`` lists the variables it sampled
    (neither observed nor a plate's index site)."""

    def __init__(self, t: int):
        super().__init__()
        self.t = t
        self.sampled: list[str] = []

    def _pyro_sample(self, msg: dict) -> None:
        if not msg["is_observed"] and type(msg["fn"]).__name__ != "_Subsample":
            self.sampled.append(msg["name"])
        msg["name"] = step_site(msg["name"], self.t)
