"""Effective sample size per gradient evaluation of ppgen's defaults against stock NumPyro's defaults, on the
posteriordb posteriors of models/posteriordb/.

Why ESS per gradient: NUTS spends nearly all its time in gradients of the log density (one per leapfrog step), so
the leapfrog steps of warmup and draws, summed over all chains, are its cost; unlike seconds, that count does not
depend on the machine or its load. The efficiency of a run is its smallest rank-normalized bulk ESS (Vehtari et al.
2021, arXiv:1903.08008) over the latent parameters (every element of a vector), per 1000 gradients; the smallest
tail ESS is reported beside it.

- ppgen: ``python -m ppgen run SPEC --out <out>/<posterior> --quiet --set evaluation.plots=false``, the user's path:
  the spec's ``[inference]`` and ppgen's defaults otherwise (4 chains x 1000 warmup + 1000 draws, seed 0, mass =
  "auto", automatic non-centring, ...). Gradients, sampling seconds and the sampler's choices are the run's
  metrics.json "gradient_evaluations", "seconds" and "sampler"; the draws are its posterior.nc.
- NumPyro's defaults: ``MCMC(NUTS(model.numpyro_model), chain_method="sequential")`` on the model as written (no
  non-centring), i.e. a diagonal mass matrix, init_to_uniform, target_accept_prob 0.8, max_tree_depth 10, with the
  same chains, warmup and draws as the ppgen run, key PRNGKey(0), in float64 as ppgen samples; gradients are the
  summed ``num_steps`` of warmup and draws. The spec's own ``[inference]`` choices (an init_strategy, a mass) are
  not applied on this side. It runs in a worker process, stopped after ``--timeout`` seconds (an error row).

The parameters compared are the latent sites of NumPyro's samples that ppgen's posterior group holds too (ppgen
writes non-centred sites back under their names as written). Each row is printed, and appended to
``<out>/rows.jsonl``, as soon as it is done; a posterior that fails on one side is a row with that side's error.
The Markdown table and its summary lines are printed at the end and written to ``--table``.

    python bench/ess_per_gradient.py [--only NAME ...] [--skip NAME ...] [--chains C] [--warmup W] [--samples S]
                                     [--out DIR] [--table FILE] [--timeout SECONDS]
    python bench/ess_per_gradient.py --out /tmp/ess-per-gradient --table ess_per_gradient.md   # all 17
    python bench/ess_per_gradient.py --only kidiq eight_schools --chains 2 --warmup 200 --samples 200   # a smoke run
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from posteriordb import REPO, SPECS, _last_line, _one_line

HEADER = (
    "posterior",
    "ppgen min bulk ESS",
    "ppgen gradients",
    "ppgen ESS / 1000 gradients",
    "ppgen choices",
    "NumPyro min bulk ESS",
    "NumPyro gradients",
    "NumPyro ESS / 1000 gradients",
    "ratio ppgen / NumPyro",
    "ppgen sampling s",
    "NumPyro sampling s",
)

SIDES = {"ppgen": "ppgen", "numpyro": "NumPyro"}


def min_ess(draws: dict[str, np.ndarray]) -> dict:
    """The smallest bulk and tail ESS over every element of the draws (name -> [chain, draw, ...]); NaN where a
    parameter does not move."""
    from ppgen.evaluate import inference_data

    def smallest(method: str) -> float:
        return float(np.min(np.concatenate([np.ravel(inference_data.ess(x, method=method)) for x in draws.values()])))

    return {"ess_bulk": smallest("bulk"), "ess_tail": smallest("tail")}


def run_ppgen(name: str, out: Path, overrides: list[str]) -> tuple[dict, dict]:
    """``ppgen run`` on the posterior's spec into ``out/name``: its side of the row, and its posterior draws."""
    from ppgen.evaluate import inference_data

    folder = out / name
    command = [sys.executable, "-m", "ppgen", "run", str(SPECS / f"{name}.toml"), "--out", str(folder), "--quiet"]
    command += [item for override in ["evaluation.plots=false", *overrides] for item in ("--set", override)]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if finished.returncode != 0:
        raise RuntimeError(f"ppgen run exited {finished.returncode}: {_last_line(finished.stderr)}")
    metrics = json.loads((folder / "metrics.json").read_text())
    posterior = inference_data.get_group(inference_data.load(folder / "posterior.nc"), "posterior")
    draws = {variable: np.asarray(posterior[variable].transpose("chain", "draw", ...)) for variable in posterior}
    side = {"gradients": metrics["gradient_evaluations"], "seconds": metrics["seconds"], "sampler": metrics["sampler"]}
    return side, draws


def run_numpyro(name: str, overrides: list[str]) -> tuple[dict, dict]:
    """Stock NumPyro NUTS on the spec's model, with the chains, warmup and draws ppgen runs: its side of the row,
    and its draws of the latent sites (name -> [chain, draw, ...])."""
    import jax
    from numpyro.infer import MCMC, NUTS

    from ppgen.infer.bayes_data import float64
    from ppgen.spec.load import load_spec

    spec = load_spec(SPECS / f"{name}.toml", overrides=overrides)
    model, inference = spec.model, spec.settings.inference
    budget = {key: getattr(inference, key) for key in ("num_warmup", "num_samples", "num_chains")}
    started = time.perf_counter()
    with float64():
        data = model.jax_data()
        mcmc = MCMC(NUTS(model.numpyro_model), **budget, chain_method="sequential", progress_bar=False)
        mcmc.warmup(jax.random.PRNGKey(0), collect_warmup=True, extra_fields=("num_steps",), data=data)
        gradients = int(mcmc.get_extra_fields()["num_steps"].sum())
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=("num_steps",), data=data)
        gradients += int(mcmc.get_extra_fields()["num_steps"].sum())
        samples = mcmc.get_samples(group_by_chain=True)
    seconds = time.perf_counter() - started
    draws = {site: np.asarray(samples[site]) for site in model.latent_names if site in samples}
    return {"gradients": gradients, "seconds": seconds}, draws


def run_numpyro_within(name: str, overrides: list[str], timeout: float) -> tuple[dict, dict]:
    """``run_numpyro`` in a worker process, stopped after ``timeout`` seconds (a chain that stalls, as stock NUTS
    may from a uniform start on Lotka-Volterra, cannot be stopped inside JAX's compiled loop)."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply_async(run_numpyro, (name, overrides)).get(timeout)
    except multiprocessing.TimeoutError:
        raise RuntimeError(f"did not finish in {timeout:.0f} s") from None
    finally:
        pool.terminate()


def run_one(name: str, out: Path, overrides: list[str], timeout: float) -> dict:
    """One posterior on both sides: a row (a side that failed has its error instead)."""
    row: dict = {"name": name}
    results = {}
    runners = {
        "ppgen": lambda: run_ppgen(name, out, overrides),
        "numpyro": lambda: run_numpyro_within(name, overrides, timeout),
    }
    for side, runner in runners.items():
        try:
            row[side], results[side] = runner()
        except Exception as error:  # one failing posterior should not stop the others
            row[side] = {"error": _one_line(error)}
    shared = set.intersection(*map(set, results.values())) if len(results) == 2 else None
    for side, draws in results.items():
        compared = {variable: values for variable, values in draws.items() if shared is None or variable in shared}
        try:
            row[side].update(min_ess(compared), parameters=sorted(compared))
            row[side]["per_1000"] = 1000 * row[side]["ess_bulk"] / row[side]["gradients"]
        except Exception as error:
            row[side] = {"error": _one_line(error)}
    if all("per_1000" in row[side] for side in SIDES):
        row["ratio"] = row["ppgen"]["per_1000"] / row["numpyro"]["per_1000"]
    return row


def _cells(row: dict) -> list[str]:
    def side(key: str) -> list[str]:
        values, choices = row[key], key == "ppgen"
        if "error" in values:
            return ["error", "-", "-"] + ["-"] * choices
        cells = [f"{values['ess_bulk']:.0f} (tail {values['ess_tail']:.0f})", str(values["gradients"])]
        cells.append(f"{values['per_1000']:.2f}")
        return cells + ([", ".join(f"{k}={v}" for k, v in values["sampler"].items())] if choices else [])

    ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
    seconds = [f"{row[key]['seconds']:.1f}" if "seconds" in row[key] else "-" for key in SIDES]
    return [row["name"], *side("ppgen"), *side("numpyro"), ratio, *seconds]


def markdown(rows: list[dict], title: str) -> str:
    """The table, its summary over the posteriors where both sides ran (with a finite ratio), and the errors."""
    lines = [title, "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(row)) + " |" for row in rows]
    both = [row for row in rows if math.isfinite(row.get("ratio", math.nan)) and row["ratio"] > 0]
    if both:
        ratios = [row["ratio"] for row in both]
        geometric = math.exp(statistics.fmean(math.log(ratio) for ratio in ratios))
        lines += ["", f"Over the {len(both)} posteriors where both ran, ESS per gradient ppgen / NumPyro:", ""]
        lines += [f"- geometric mean of the ratios {geometric:.2f}, median {statistics.median(ratios):.2f}"]
        lines += [f"- ppgen ahead on {sum(ratio > 1 for ratio in ratios)} of {len(both)}"]
        for key, label in SIDES.items():
            ess, gradients = sum(row[key]["ess_bulk"] for row in both), sum(row[key]["gradients"] for row in both)
            lines += [f"- {label}: total min bulk ESS {ess:.0f} / {gradients} gradients = {1000 * ess / gradients:.2f}"]
            lines[-1] += " per 1000"
    errors = [
        f"- {row['name']} ({SIDES[key]}): {row[key]['error']}" for row in rows for key in SIDES if "error" in row[key]
    ]
    return "\n".join(lines + (["", "Errors:", ""] + errors if errors else [])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    keep = "both sides; default: the spec's, as `ppgen run` has it"
    parser.add_argument("--chains", type=int, help=f"inference.num_chains ({keep})")
    parser.add_argument("--warmup", type=int, help=f"inference.num_warmup ({keep})")
    parser.add_argument("--samples", type=int, help=f"inference.num_samples, draws per chain ({keep})")
    parser.add_argument("--only", nargs="+", default=[], help="run the posteriors whose name contains one of these")
    parser.add_argument("--skip", nargs="+", default=[], help="leave out the posteriors whose name contains these")
    parser.add_argument("--out", type=Path, help="the run folders and rows.jsonl (default: a temporary folder)")
    parser.add_argument("--table", type=Path, help="also write the Markdown table to this file")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds NumPyro's side may take a posterior")
    args = parser.parse_args()
    names = sorted(
        path.stem for path in SPECS.glob("*.toml") if not args.only or any(o in path.stem for o in args.only)
    )
    names = [name for name in names if not any(part in name for part in args.skip)]
    if not names:
        sys.exit(f"no posterior in {SPECS} matches --only {args.only} and --skip {args.skip}")
    budget = {"num_chains": args.chains, "num_warmup": args.warmup, "num_samples": args.samples}
    overrides = [f"inference.{key}={value}" for key, value in budget.items() if value is not None]
    title = (
        f"ESS per gradient, ppgen's defaults against NumPyro's, with {' '.join(overrides) or 'no overrides'}"
        " (the specs' settings otherwise: 4 chains x 1000 warmup + 1000 draws)"
    )
    print(title, flush=True)
    with tempfile.TemporaryDirectory(prefix="ess-per-gradient-") as scratch:
        out = (args.out or Path(scratch)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in names:
            rows.append(run_one(name, out, overrides, args.timeout))
            with open(out / "rows.jsonl", "a") as jsonl:  # after every row: a stopped bench keeps its rows
                jsonl.write(json.dumps(rows[-1]) + "\n")
            print("  " + " | ".join(_cells(rows[-1])), flush=True)
    text = markdown(rows, title)
    print("\n" + text, end="")
    if args.table:
        args.table.write_text(text)
        print(f"table written to {args.table}")


if __name__ == "__main__":
    main()
