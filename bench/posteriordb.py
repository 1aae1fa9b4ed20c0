"""`ppgen run` on the posteriordb posteriors of models/posteriordb/, against their reference draws: the README's
validation table.

Each posterior goes through the path of a user's ``ppgen run``: ``load_spec`` with the overrides, then the runner
(``ppgen.runner.run``: sampling, posterior.nc, checks, predictive, LOO, plots) into the run folder
``<--out>/<posterior>`` (default: a temporary folder, removed at the end). The table is then read from that folder,
as a user would read it: the posterior group of ``posterior.nc`` (latent, deterministic and recovered discrete
variables) against the reference draws, over every reference parameter, and ``metrics.json``. Without
``--chains``, ``--warmup``, ``--samples``, ``--seed`` or ``--set``, each posterior runs exactly as ``ppgen run SPEC``
runs it: the spec's ``[inference]``, ppgen's defaults (4 chains x 1000 warmup + 1000 draws, seed 0) unless the
spec says otherwise. A run that fails is a FAIL row with its error in the notes under the table (the others go
on); when it failed after sampling, the draws it saved are still compared.

Columns: PASS when every reference parameter has |mean - ref mean| <= 0.1 ref sd and sd / ref sd in 0.9..1.1
(``ppgen.evaluate.reference.ReferenceComparison.agrees``; a parameter whose reference tail has no fourth moment, Pareto
k >= 1/4, by its median and IQR / 1.349 instead, since its sd cannot be estimated), else FAIL (so is a run that raised,
or that lost a reference variable); the largest |mean - ref mean| / ref sd; the smallest and largest sd ratio; the
largest of |mean - ref mean| and |sd - ref sd| in Monte Carlo standard errors of the difference ("z"; above 4 is noted,
see tests/test_posteriordb.py; a stuck chain inflates the MCSE too, so read z with the other columns and R-hat); the
largest rank-normalized split R-hat and smallest bulk ESS over the reference parameters; that ESS per second of sampling
(warmup and draws, JAX compilation included: the run's ``metrics.json`` "seconds"); divergent transitions; the number of
warnings in the run's summary.txt; sampling seconds; wall seconds of the whole command. Wall seconds are ``load_spec`` +
``run`` in a worker that has imported ppgen, JAX and NumPyro already (Python start-up and those imports excluded); with
``--cli`` each posterior runs as a ``python -m ppgen run`` subprocess instead and wall seconds include its start-up.
JAX's persistent compilation cache (``PPGEN_JAX_CACHE``) is used as ``ppgen run`` uses it: ``PPGEN_JAX_CACHE=`` times
compilation as on a first run.

Posteriors are fitted one per worker: local processes (``--executor process``, the default) or Ray tasks
(``--executor ray``, on a local instance of ``--workers`` CPUs or the cluster at ``--ray-address``, whose nodes
need ppgen, this repository and the reference draws at the same paths; each task writes its run folder on its own
node and compares there). Each fit runs its chains as the spec's ``chain_method`` says; with several workers,
``--set inference.chain_method=sequential`` avoids oversubscription. Reference draws: $PPGEN_DATA/posteriordb,
else ../shared/data/posteriordb. The Markdown table is printed at the end and written to ``--table``.

    python bench/posteriordb.py [--chains C] [--warmup W] [--samples S] [--seed N] [--only kidiq] [--skip ode ...]
                                [--workers 1] [--executor process|ray] [--ray-address ADDR] [--cli] [--out DIR]
                                [--table FILE] [--set inference.dense_mass=true ...] [--data FOLDER]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ppgen.errors import PpgenError
from ppgen.executors import EXECUTORS, make_executor

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "models" / "posteriordb"
HEADER = (
    "posterior",
    "verdict",
    "max \\|mean - ref\\| / ref sd",
    "sd ratio (min-max)",
    "max z",
    "max R-hat",
    "min bulk ESS",
    "ESS/s",
    "divergences",
    "warnings",
    "sampling s",
    "wall s",
)
Z_NOTE = 4.0


def default_data() -> Path:
    return Path(os.environ.get("PPGEN_DATA", REPO.parent / "shared" / "data")) / "posteriordb"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _fit(name: str, folder: Path, overrides: list[str], cli: bool) -> float:
    """Run ``ppgen run`` on the posterior's spec into ``folder``; returns the wall seconds. Raises PpgenError with
    the run's one-line error when it fails."""
    spec_path = SPECS / f"{name}.toml"
    if cli:
        command = [sys.executable, "-m", "ppgen", "run", str(spec_path), "--out", str(folder), "--quiet"]
        command += [item for override in overrides for item in ("--set", override)]
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - started
        if finished.returncode != 0:
            raise PpgenError(f"ppgen run exited {finished.returncode}: {_last_line(finished.stderr)}")
        return seconds
    from ppgen.runner import run
    from ppgen.spec.load import load_spec

    started = time.perf_counter()
    run(load_spec(spec_path, overrides=overrides), folder, progress=False)
    return time.perf_counter() - started


def _warm_imports() -> None:
    """Import what a run imports, so that the in-process wall time leaves out module start-up as --cli does not."""
    import jax  # noqa: F401
    import numpyro  # noqa: F401

    import ppgen.bayesian_run  # noqa: F401
    import ppgen.evaluate.check_plots  # noqa: F401


def run_one(name: str, data: Path, overrides: list[str], out: Path, cli: bool = False) -> dict:
    """Run one posterior through ``ppgen run`` and compare its run folder with the reference: a row of the table.

    A run that fails says why in the row (``error``); when it failed after sampling, the draws it saved are still
    compared (its sampling seconds, ESS/s and warnings, which only a finished run writes, are then missing)."""
    from ppgen.run_folder import RunFolder

    folder = out / name
    if RunFolder(folder).holds_run():  # its draws are an earlier run's
        return {"name": name, "error": f"{folder} already holds a run: pass another --out"}
    row: dict = {"name": name}
    wall = None
    try:
        if not cli:
            _warm_imports()
        wall = _fit(name, folder, overrides, cli)
    except Exception as error:  # one failing posterior should not stop the others
        row["error"] = _one_line(error)
    try:
        row.update(_compare(folder, data / name, wall))
    except Exception as error:
        row.setdefault("error", _one_line(error))
    return row


def _one_line(error: Exception) -> str:
    """The error's type and first line; for an error raised inside a JAX callback, whose first line ends in a
    traceback's header, the first line of the exception that traceback ends in."""
    lines = str(error).splitlines() or [""]
    causes = [line for line in lines[1:] if re.match(r"[\w.]+(Error|Exception): ", line)]
    cause = f" ({causes[0].strip()})" if lines[0].endswith("Traceback (most recent call last):") and causes else ""
    return f"{type(error).__name__}: {lines[0]}{cause}"


def _compare(folder: Path, reference_folder: Path, wall: float | None) -> dict:
    """The agreement and sampler columns of a run folder against its reference."""
    from ppgen.evaluate import inference_data
    from ppgen.evaluate.reference import compare_to_reference, load_reference, posterior_name
    from ppgen.run_folder import POSTERIOR_FILE, RunFolder

    results = inference_data.load(folder / POSTERIOR_FILE)
    metrics = RunFolder(folder).read_metrics()
    posterior = inference_data.get_group(results, "posterior")
    comparison = compare_to_reference(posterior, load_reference(reference_folder))
    table = comparison.table
    compared = dict.fromkeys(table.index.str.split("[").str[0])
    # R-hat compares chains: none with one chain.
    chains = posterior.sizes["chain"]
    rhats = [inference_data.rhat(np.asarray(posterior[posterior_name(v)])) for v in compared] if chains > 1 else []
    has_stats = "sample_stats" in inference_data.groups(results)
    stats = inference_data.get_group(results, "sample_stats") if has_stats else {}
    worst = table[["mean_z", "sd_z"]].max(axis=1)
    min_ess = float(table["ess_bulk"].min())
    seconds = metrics.get("seconds")
    return {
        "agrees": comparison.agrees,
        "values": {
            "mean_error": comparison.max_mean_error,
            "sd_ratio": comparison.sd_ratio_range,
            "z": float(worst.max()),
            "rhat": max((float(np.max(values)) for values in rhats), default=None),
            "ess": min_ess,
            "ess_per_second": None if seconds is None else min_ess / seconds,
            "divergences": int(np.sum(stats["diverging"])) if "diverging" in stats else 0,
            "warnings": len(metrics["warnings"]) if "warnings" in metrics else None,
            "seconds": seconds,
            "wall": wall,
        },
        "flagged": [f"{param} (z={z:.1f})" for param, z in worst.items() if z > Z_NOTE],
        "missing": list(comparison.missing),
        "by_quantiles": [param for param, what in table["statistics"].items() if what != "mean, sd"],
    }


FORMATS = {
    "mean_error": "{:.3f}",
    "sd_ratio": "{0[0]:.3f}-{0[1]:.3f}",
    "z": "{:.1f}",
    "rhat": "{:.3f}",
    "ess": "{:.0f}",
    "ess_per_second": "{:.1f}",
    "divergences": "{}",
    "warnings": "{}",
    "seconds": "{:.1f}",
    "wall": "{:.1f}",
}


def _cells(row: dict) -> list[str]:
    values = row.get("values", {})
    verdict = "PASS" if row.get("agrees") and "error" not in row else "FAIL"
    cells = [form.format(values[key]) if values.get(key) is not None else "-" for key, form in FORMATS.items()]
    return [row["name"], verdict, *cells]


def _notes(row: dict) -> list[str]:
    notes = [row["error"]] if "error" in row else []
    notes += [f"z > {Z_NOTE:g}: {', '.join(row['flagged'])}"] if row.get("flagged") else []
    heavy = row.get("by_quantiles")
    notes += [f"heavy-tailed, compared by median and IQR: {', '.join(heavy)}"] if heavy else []
    return notes + ([f"not compared: {', '.join(row['missing'])}"] if row.get("missing") else [])


def markdown(rows: list[dict], title: str) -> str:
    """The table as Markdown: a title line, the table, then one bullet per posterior with notes (errors, z > 4)."""
    lines = [title, "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    passed = sum(1 for row in rows if _cells(row)[1] == "PASS")
    lines += ["", f"{passed} of {len(rows)} posteriors agree with their reference draws."]
    notes = [f"- {row['name']}: {'; '.join(_notes(row))}".replace("|", "\\|") for row in rows if _notes(row)]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def selected_posteriors(args) -> list[str]:
    """The posteriors that ``--only`` and ``--skip`` select, once the reference folder ``--data`` is checked; exits
    with one line when none is left or the folder is missing."""
    names = sorted(path.stem for path in SPECS.glob("*.toml") if args.only in path.stem)
    names = [name for name in names if not any(part in name for part in args.skip)]
    if not names:
        sys.exit(f"no posterior in {SPECS} matches --only {args.only!r} and --skip {args.skip}")
    if not args.data.is_dir():
        sys.exit(f"{args.data}: reference draws not found (set PPGEN_DATA or pass --data)")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    keep = "default: the spec's, as `ppgen run` has it"
    parser.add_argument("--chains", type=int, help=f"inference.num_chains ({keep})")
    parser.add_argument("--warmup", type=int, help=f"inference.num_warmup ({keep})")
    parser.add_argument("--samples", type=int, help=f"inference.num_samples, draws per chain ({keep})")
    parser.add_argument("--seed", type=int, help=f"inference.seed ({keep})")
    parser.add_argument("--only", default="", help="run the posteriors whose name contains this")
    parser.add_argument("--skip", action="append", default=[], help="leave out the posteriors whose name contains this")
    parser.add_argument(
        "--workers", type=int, help="posteriors fitted at once (default: 1 process; Ray: all cores of a local instance)"
    )
    parser.add_argument("--executor", choices=EXECUTORS, default="process", help="local processes or Ray tasks")
    parser.add_argument("--ray-address", help="a running Ray cluster for --executor ray (default: a local instance)")
    parser.add_argument("--cli", action="store_true", help="run each posterior as a `python -m ppgen run` subprocess")
    parser.add_argument("--out", type=Path, help="the folder of the run folders (default: a temporary one)")
    parser.add_argument("--table", type=Path, help="also write the Markdown table to this file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a spec override")
    parser.add_argument("--data", type=Path, default=default_data(), help="the posteriordb reference folder")
    args = parser.parse_args()
    names = selected_posteriors(args)
    budget = {"num_chains": args.chains, "num_warmup": args.warmup, "num_samples": args.samples, "seed": args.seed}
    overrides = [f"inference.{key}={value}" for key, value in budget.items() if value is not None] + args.set
    how = "`python -m ppgen run` subprocesses" if args.cli else "ppgen.runner.run"
    cache = "off" if os.environ.get("PPGEN_JAX_CACHE") == "" else "on"
    title = (
        f"`ppgen run` ({how}, {args.executor} executor) with {' '.join(overrides) or 'no overrides'}, the specs'"
        f" settings otherwise (ppgen's defaults: 4 chains x 1000 warmup + 1000 draws, seed 0); JAX compilation"
        f" cache {cache}"
    )
    print(title, flush=True)
    workers = args.workers or (1 if args.executor == "process" and args.ray_address is None else None)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="posteriordb-") as scratch:
        out = (args.out or Path(scratch)).resolve()
        try:
            pool = make_executor(args.executor, workers, address=args.ray_address)
        except PpgenError as error:
            sys.exit(f"posteriordb: {error}")
        rows = []
        with pool:
            futures = [pool.submit(run_one, name, args.data.resolve(), overrides, out, args.cli) for name in names]
            for future in futures:
                row = future.result()
                rows.append(row)
                print("  " + " ".join(_cells(row)) + "  " + "; ".join(_notes(row)), flush=True)
                if args.table:  # after every row: a long bench stopped part-way keeps the rows it has
                    args.table.write_text(markdown(rows, f"{title}; {len(rows)} of {len(names)} so far."))
    total = time.perf_counter() - started
    text = markdown(rows, f"{title}; total {total:.0f} s.")
    print("\n" + text, end="")
    if args.table:
        args.table.write_text(text)
        print(f"table written to {args.table}")


if __name__ == "__main__":
    main()
