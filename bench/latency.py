"""What a user waits for, end to end: whole processes, timed from outside, against stock NumPyro and PyMC.

Every row is a fresh process (``python -c`` or the ``ppgen`` command) timed by the wall clock from start to exit;
each runs once untimed (so JAX's compilation cache and PyTensor's compile directory are warm, as for a user's
second run) and then ``--repeats`` times, and the median is printed. The model is eight schools, non-centred
(models/eight_schools.toml), 4 chains x 1000 warmup + 1000 draws in every system:
  ppgen run             ``ppgen run models/eight_schools.toml --quiet``: sampling, posterior predictive,
                        log-likelihood, ArviZ summary, R-hat/ESS/divergence/tree-depth checks, PPC p-values and
                        PSIS-LOO, posterior.nc and summary.txt written, the summary printed; its figures are drawn
                        by a background process after the command returns
  stock NumPyro         the same model written in NumPyro as its docs do, ``MCMC(NUTS(model), num_chains=4).run``
                        (one CPU device: NumPyro runs the chains one after another; no persistent compilation
                        cache), then ``az.summary`` printed (the peer of ../shared/BASELINES.md, 17.2 s)
  PyMC                  the same model in PyMC, ``pm.sample`` (4 chains, default cores), then ``az.summary``
The row with ``inference.mass = diag`` leaves out the default "auto" mass matrix's decision (the posterior's
curvature at 4 points); a warm run reads that decision back from the cache (``ppgen.infer.remembered``), so the
two rows should agree, and the "first run" row (``PPGEN_JAX_CACHE=""``: every program compiled, the decision made)
shows what a model's first run costs. And the floors: ``import numpyro.infer`` (every NumPyro program pays it),
that plus ArviZ as ppgen imports it (every run that summarizes its draws with ArviZ pays it), and
``ppgen --help``.
``--repeat-fit`` adds the in-process case (notebooks, SBC replicates): ``ppgen.run`` on the same spec a second
time in one process, with and without its figures, and the sampler alone (``ppgen.posterior.infer``).

    python bench/latency.py [--repeats 5] [--no-pymc] [--repeat-fit]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "models" / "eight_schools.toml"

STOCK_NUMPYRO = """
import numpyro
import arviz as az
import jax
import numpy as np
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

y = np.array([28, 8, -3, 7, -1, 1, 18, 12.0])
sigma = np.array([15, 10, 16, 11, 9, 11, 10, 18.0])

def model(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("school", 8):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0, 1))
        theta = numpyro.deterministic("theta", mu + tau * theta_raw)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4, progress_bar=False)
mcmc.run(jax.random.PRNGKey(0), sigma, y=y)
print(az.summary(az.from_numpyro(mcmc)))
"""

PYMC = """
import arviz as az
import numpy as np
import pymc as pm

y = np.array([28, 8, -3, 7, -1, 1, 18, 12.0])
sigma = np.array([15, 10, 16, 11, 9, 11, 10, 18.0])
with pm.Model():
    mu = pm.Normal("mu", 0, 5)
    tau = pm.HalfCauchy("tau", 5)
    theta_raw = pm.Normal("theta_raw", 0, 1, shape=8)
    theta = pm.Deterministic("theta", mu + tau * theta_raw)
    pm.Normal("y", theta, sigma, observed=y)
    trace = pm.sample(1000, tune=1000, chains=4, random_seed=0, progressbar=False)
print(az.summary(trace))
"""

REPEAT_FIT = """
import sys, tempfile, time
from pathlib import Path
import ppgen
from ppgen.posterior import infer
plots = sys.argv[1] == "plots"
spec = ppgen.load_spec(sys.argv[2], overrides=[] if plots else ["evaluation.plots=false"])
with tempfile.TemporaryDirectory() as scratch:
    ppgen.run(spec, Path(scratch) / "first", progress=False)
    start = time.perf_counter()
    ppgen.run(spec, Path(scratch) / "second", progress=False)
    run_seconds = time.perf_counter() - start
start = time.perf_counter()
infer(spec.model, spec.settings)
print(run_seconds, time.perf_counter() - start)
"""


WITH_ARVIZ = "import numpyro.infer; from ppgen.evaluate import inference_data; inference_data.arviz_version()"


def wall_seconds(command: list[str], environment: dict | None = None) -> float:
    """Seconds until ``command`` exits; then, untimed, until ppgen's background plot process has finished, so that
    it does not run into the next measurement."""
    start = time.perf_counter()
    subprocess.run(command, env=environment, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    while subprocess.run(["pgrep", "-f", "ppgen.evaluate.check_plots"], capture_output=True).returncode == 0:
        time.sleep(0.1)
    return seconds


def median_seconds(command: list[str], repeats: int, environment: dict | None = None) -> float:
    wall_seconds(command, environment)  # warms the compilation caches
    return statistics.median(wall_seconds(command, environment) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-pymc", action="store_true")
    parser.add_argument("--repeat-fit", action="store_true", help="also time a second fit in the same process")
    args = parser.parse_args()
    quiet_pymc = dict(os.environ, PYTHONWARNINGS="ignore")
    with tempfile.TemporaryDirectory() as scratch:
        out = str(Path(scratch) / "run")
        rows = {
            "import numpyro.infer (floor)": [sys.executable, "-c", "import numpyro.infer"],
            "  and ArviZ (floor with a summary)": [sys.executable, "-c", WITH_ARVIZ],
            "ppgen --help": ["ppgen", "--help"],
            "ppgen run models/eight_schools.toml": [
                "sh",
                "-c",
                f"rm -rf {out} && ppgen run {SPEC} --quiet --out {out}",
            ],
            "  the same, inference.mass = diag": [
                "sh",
                "-c",
                f"rm -rf {out} && ppgen run {SPEC} --quiet --out {out} --set inference.mass=diag",
            ],
            "  the same, first run (no caches)": [
                "sh",
                "-c",
                f"rm -rf {out} && PPGEN_JAX_CACHE= ppgen run {SPEC} --quiet --out {out}",
            ],
            "stock NumPyro + az.summary": [sys.executable, "-c", STOCK_NUMPYRO],
        }
        if not args.no_pymc:
            rows["PyMC + az.summary"] = [sys.executable, "-c", PYMC]
        print(f"wall seconds of whole processes, median of {args.repeats} after one warm-up run; {os.cpu_count()} CPUs")
        for name, command in rows.items():
            environment = quiet_pymc if name.startswith("PyMC") else None
            print(f"{name:<40}{median_seconds(command, args.repeats, environment):8.2f} s", flush=True)
    if args.repeat_fit:
        for plots in ("no-plots", "plots"):
            command = [sys.executable, "-c", REPEAT_FIT, plots, str(SPEC)]
            seconds = [
                subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
                for _ in range(args.repeats)
            ]
            run_seconds = statistics.median(float(s[0]) for s in seconds)
            infer_seconds = statistics.median(float(s[1]) for s in seconds)
            print(
                f"second ppgen.run in one process ({plots:<8}){run_seconds:8.2f} s;  ppgen.posterior.infer alone"
                f" {infer_seconds:.2f} s"
            )


if __name__ == "__main__":
    main()
