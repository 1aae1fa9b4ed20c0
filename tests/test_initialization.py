"""Initialization strategies (ppgen.models.initialization): "median" and "sample" start a bounded variable with a
density (an improper uniform site plus a factor) from draws of that density inside its support, on both backends;
where no draw falls inside, a uniform start on the unconstrained scale.

Without this, both libraries start such a site where they start one they cannot sample: NumPyro uniformly in
(-2, 2) on the unconstrained (log) scale, so at most e^2 = 7.4 for ``lower = 0``; Pyro at a feasible point (1).
The density here is Normal(50, 1) or Normal(-50, 1), so a start near 50 can only come from the density.
"""

import jax
import numpy as np
import pyro
import pytest
from numpyro.infer.util import constrain_fn, initialize_model
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger

from ppgen.models.backends import numpyro_backend, pyro_backend
from ppgen.models.constraints import constrained_site
from ppgen.models.initialization import numpyro_init_strategy, pyro_init_strategy

SIZE = 3  # elements of the site, each started on its own


def _positive_site(backend, loc: float):
    """x [SIZE] > 0 with density Normal(loc, 1) on the positive half-line."""

    def model():
        density = backend.distributions["Normal"](loc=loc, scale=1.0)
        with backend.effects.plate("p", SIZE, dim=-1):
            return constrained_site(backend, "x", density, None, 0.0, None, (SIZE,), ())

    return model


def _numpyro_start(loc: float, strategy: str, seed: int = 0) -> np.ndarray:
    model = _positive_site(numpyro_backend(), loc)
    with jax.enable_x64(True):
        info = initialize_model(jax.random.PRNGKey(seed), model, init_strategy=numpyro_init_strategy(strategy))
        return np.asarray(constrain_fn(model, (), {}, info.param_info.z)["x"])


def _pyro_start(loc: float, strategy: str, seed: int = 0) -> np.ndarray:
    pyro.set_rng_seed(seed)
    with InitMessenger(pyro_init_strategy(strategy)):
        trace = poutine.trace(_positive_site(pyro_backend(), loc)).get_trace()
    return trace.nodes["x"]["value"].numpy()


START = {"numpyro": _numpyro_start, "pyro": _pyro_start}


@pytest.mark.parametrize("backend", sorted(START))
def test_median_starts_a_bounded_variable_at_its_density_median(backend):
    # The median of 15 draws of N(50, 1) has sd 1.2533 / sqrt(15) = 0.32: 1.5 is 4.6 sd.
    start = START[backend](50.0, "median")
    assert start.shape == (SIZE,)
    np.testing.assert_array_less(np.abs(start - 50.0), 1.5)


@pytest.mark.parametrize("backend", sorted(START))
def test_sample_starts_a_bounded_variable_at_a_draw_of_its_density(backend):
    first, second = START[backend](50.0, "sample", seed=0), START[backend](50.0, "sample", seed=1)
    np.testing.assert_array_less(np.abs(first - 50.0), 5.0)  # one draw of N(50, 1): 5 sd
    assert not np.allclose(first, second)  # a draw, not a fixed point


@pytest.mark.parametrize("backend", sorted(START))
@pytest.mark.parametrize("strategy", ["median", "sample"])
def test_a_density_outside_the_support_starts_uniformly(backend, strategy):
    # N(-50, 1) puts no draw above 0 (probability 1e-545): a uniform start in (-2, 2) on the log scale instead.
    start = START[backend](-50.0, strategy)
    assert np.all((start > np.exp(-2.0)) & (start < np.exp(2.0)))


def test_a_numpyro_run_imports_no_torch_for_its_start():
    import subprocess
    import sys

    code = (
        "import sys; from ppgen.models.initialization import numpyro_init_strategy;"
        " numpyro_init_strategy('median'); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
