"""Pathfinder against the posteriordb reference draws: `ppgen run` with inference/pathfinder.toml on each posterior
of models/posteriordb/, as a `python -m ppgen run` subprocess, then its posterior.nc against the reference
(``ppgen.evaluate.reference``), as bench/posteriordb.py compares NUTS.

Columns: the largest |mean - ref mean| / ref sd over the reference parameters; the smallest and largest sd / ref sd;
the Pareto k of Pathfinder's importance weights (above 0.7 the run warns that its draws are unreliable); Pathfinder's
seconds (the run's metrics.json "seconds": L-BFGS paths, draws and resampling, JAX compilation included); wall
seconds of the whole command (Python start-up, checks and LOO included). A run that fails is a row with its error.
The spec's own [inference] table is replaced by inference/pathfinder.toml; plots are off.

    python bench/pathfinder.py [--only kidiq] [--skip ode ...] [--set inference.num_paths=8 ...] [--data FOLDER]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from posteriordb import REPO, SPECS, default_data, selected_posteriors

HEADER = ("posterior", "max \\|mean - ref\\| / ref sd", "sd ratio (min-max)", "Pareto k", "pathfinder s", "wall s")


def run_one(name: str, data: Path, overrides: list[str], out: Path) -> list[str]:
    """One row of the table: ``ppgen run`` with Pathfinder on the posterior, compared with its reference."""
    from ppgen.evaluate import inference_data
    from ppgen.evaluate.reference import compare_to_reference, load_reference

    folder = out / name
    command = [sys.executable, "-m", "ppgen", "run", str(SPECS / f"{name}.toml"), "--out", str(folder), "--quiet"]
    command += ["--inference", str(REPO / "inference" / "pathfinder.toml"), "--set", "evaluation.plots=false"]
    command += [item for override in overrides for item in ("--set", override)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        lines = finished.stderr.strip().splitlines() or [""]
        return [name, f"FAIL: {lines[-1]}".replace("|", "\\|"), "-", "-", "-", f"{wall:.1f}"]
    metrics = json.loads((folder / "metrics.json").read_text())
    posterior = inference_data.get_group(inference_data.load(folder / "posterior.nc"), "posterior")
    comparison = compare_to_reference(posterior, load_reference(data / name))
    low, high = comparison.sd_ratio_range
    return [
        name,
        f"{comparison.max_mean_error:.3f}",
        f"{low:.3f}-{high:.3f}",
        metrics["sampler"]["Pareto k"],
        f"{metrics['seconds']:.1f}",
        f"{wall:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the posteriors whose name contains this")
    parser.add_argument("--skip", action="append", default=[], help="leave out the posteriors whose name contains this")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a spec override")
    parser.add_argument("--data", type=Path, default=default_data(), help="the posteriordb reference folder")
    args = parser.parse_args()
    names = selected_posteriors(args)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    with tempfile.TemporaryDirectory(prefix="pathfinder-") as out:
        for name in names:
            row = run_one(name, args.data.resolve(), args.set, Path(out))
            lines.append("| " + " | ".join(row) + " |")
            print("  " + " ".join(row), flush=True)
    overrides = " ".join(args.set) or "no overrides"
    print(f"\n`ppgen run --inference inference/pathfinder.toml` ({overrides}) against posteriordb's reference draws\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
