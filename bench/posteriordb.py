"""ppgen's NUTS on the posteriordb posteriors of models/posteriordb/, against their reference draws.

For each posterior: the largest |mean - ref mean| / ref sd and the smallest and largest sd / ref sd over its
reference parameters (latent or deterministic), the largest of |mean - ref mean| and |sd - ref sd| in Monte Carlo
standard errors of the difference ("z"; above 4 is flagged, see tests/test_posteriordb.py; a stuck chain inflates
the MCSE too, so read z with the first three columns and R-hat), the largest rank-normalized split R-hat and the
smallest bulk ESS per second of warmup and sampling (JAX compilation included) over the scalar latent parameters,
divergent transitions, and those seconds. Reference draws: $PPGEN_DATA/posteriordb, else ../shared/data/posteriordb.

Posteriors are fitted one per worker: local processes (``--executor process``, the default) or Ray tasks
(``--executor ray``, on a local instance of ``--workers`` CPUs or the cluster at ``--ray-address``, whose nodes
need ppgen, this repository and the reference draws at the same paths). Each fit runs its chains as the spec's
``chain_method`` says; with several workers, ``--set inference.chain_method=sequential`` avoids oversubscription.

    python bench/posteriordb.py [--chains 4] [--warmup 1000] [--samples 1000] [--only kidiq] [--workers 1]
                                [--executor process|ray] [--ray-address ADDR]
                                [--set inference.dense_mass=true ...] [--data FOLDER]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from ppgen.errors import PpgenError
from ppgen.executors import EXECUTORS, make_executor

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "models" / "posteriordb"
COLUMNS = ("max |dmean|/sd", "min sd ratio", "max sd ratio", "max z", "max R-hat", "min ESS/s", "div", "seconds")


def default_data() -> Path:
    return Path(os.environ.get("PPGEN_DATA", REPO.parent / "shared" / "data")) / "posteriordb"


def run_one(name: str, data: Path, overrides: list[str]) -> dict:
    """Fit one posterior and compare it with its reference; a row of the table (or the error it raised)."""
    from ppgen.evaluate import inference_data
    from ppgen.evaluate.reference import compare_to_reference, load_reference
    from ppgen.posterior import infer
    from ppgen.spec.load import load_spec

    try:
        spec = load_spec(SPECS / f"{name}.toml", overrides=overrides)
        model = spec.model
        draws = infer(model, spec.settings)
        comparison = compare_to_reference(draws.posterior, load_reference(data / name))
    except Exception as error:  # one failing posterior should not stop the others
        return {"name": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    latent = [draws.posterior[name] for name in model.latent_names]
    min_ess = min(float(np.min(inference_data.ess(values, method="bulk"))) for values in latent)
    max_rhat = max(float(np.max(inference_data.rhat(values))) for values in latent)
    table = comparison.table
    worst = table[["mean_z", "sd_z"]].max(axis=1)
    low, high = comparison.sd_ratio_range
    return {
        "name": name,
        "values": (
            comparison.max_mean_error,
            low,
            high,
            float(worst.max()),
            max_rhat,
            min_ess / draws.seconds,
            int(np.sum(draws.sample_stats.get("diverging", 0))),
            draws.seconds,
        ),
        "flagged": [f"{param} (z={z:.1f})" for param, z in worst.items() if z > 4],
        "missing": list(comparison.missing),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="draws per chain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="run the posteriors whose name contains this")
    parser.add_argument(
        "--workers", type=int, help="posteriors fitted at once (default: 1 process; Ray: all cores of a local instance)"
    )
    parser.add_argument("--executor", choices=EXECUTORS, default="process", help="local processes or Ray tasks")
    parser.add_argument("--ray-address", help="a running Ray cluster for --executor ray (default: a local instance)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an [inference] override")
    parser.add_argument("--data", type=Path, default=default_data(), help="the posteriordb reference folder")
    args = parser.parse_args()
    names = sorted(path.stem for path in SPECS.glob("*.toml") if args.only in path.stem)
    if not names:
        sys.exit(f"no posterior in {SPECS} matches --only {args.only!r}")
    if not args.data.is_dir():
        sys.exit(f"{args.data}: reference draws not found (set PPGEN_DATA or pass --data)")
    budget = [f"inference.num_chains={args.chains}", f"inference.num_warmup={args.warmup}"]
    overrides = [*budget, f"inference.num_samples={args.samples}", f"inference.seed={args.seed}", *args.set]
    settings = " ".join(args.set) or "spec defaults otherwise"
    print(f"NUTS, {args.chains} chains x {args.warmup} warmup + {args.samples} draws, seed {args.seed}, {settings}")
    print(f"{'posterior':<42}" + "".join(f"{column:>15}" for column in COLUMNS))
    started = time.perf_counter()
    workers = args.workers or (1 if args.executor == "process" and args.ray_address is None else None)
    try:
        pool = make_executor(args.executor, workers, address=args.ray_address)
    except PpgenError as error:
        sys.exit(f"posteriordb: {error}")
    with pool:
        futures = [pool.submit(run_one, name, args.data, overrides) for name in names]
        for future in futures:
            row = future.result()
            if "error" in row:
                print(f"{row['name']:<42} FAILED {row['error']}")
                continue
            figures = "".join(f"{value:>15.3f}" for value in row["values"][:3])
            max_z, max_rhat, ess_rate, divergences, seconds = row["values"][3:]
            figures += f"{max_z:>15.1f}{max_rhat:>15.3f}{ess_rate:>15.1f}{divergences:>15d}{seconds:>15.1f}"
            notes = [f"z > 4: {', '.join(row['flagged'])}"] if row["flagged"] else []
            notes += [f"not compared: {', '.join(row['missing'])}"] if row["missing"] else []
            print(f"{row['name']:<42}{figures}  {'; '.join(notes)}".rstrip())
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
