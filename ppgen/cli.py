"""The ``ppgen`` command line: a thin layer over ``ppgen.load_spec`` and ``ppgen.run``.

    ppgen run SPEC [--inference SPEC] [--set key=value ...] [--out DIR] [--resume | --force] [--prior]
    ppgen evaluate RUN [--num-samples K] [--max-examples N] [--samples N [--seed S]]
    ppgen sample RUN [-n 64] [--out FILE.png] [--sampler ancestral|pc|langevin]
    ppgen classify RUN [--num-samples K] [--max-examples N]
    ppgen compare RUN RUN [RUN ...]
    ppgen sbc SPEC [--inference SPEC] [--replicates N] [--workers W] [--executor process|ray]
                   [--ray-address ADDR] [--out DIR]

``ppgen run`` on a declarative Bayesian model (a spec with ``[variables]``) runs the Bayesian workflow
(inference, diagnostics, posterior predictive checks, LOO) instead of training a generative model.

A user mistake (bad spec key or value, missing or corrupt file, wrong data shape) prints one line
and exits with status 2; Ctrl-C during training saves a checkpoint and exits with status 130; ``ppgen sbc``
exits with status 1 when the ranks are not uniform.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from ppgen.errors import PpgenError, TrainingInterrupted
from ppgen.executors import EXECUTORS

__all__ = ["main"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_CHECK_FAILED = 1  # ppgen sbc: the ranks are not uniform


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except TrainingInterrupted as interruption:
        print(f"ppgen: {interruption}; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt as interruption:  # a SamplingInterrupted says what was kept
        print(f"ppgen: interrupted{': ' if str(interruption) else ''}{interruption}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PpgenError as error:
        print(f"ppgen: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


def _run(args) -> int:
    from ppgen.infer.launch import launched
    from ppgen.runner import run
    from ppgen.spec.bayes_run import BayesRunSpec
    from ppgen.spec.load import load_spec

    out = Path(args.out) if args.out else Path("runs") / (Path(args.spec).stem + ("-prior" if args.prior else ""))
    if args.resume and args.prior:
        raise PpgenError("--prior: a prior predictive check starts afresh; --resume continues a training run")
    if args.resume:  # the run in the folder goes on as its own spec says; --set and --inference change it
        from ppgen.generative_run import resumed_spec

        spec = resumed_spec(out, inference=args.inference, overrides=args.set)
    else:
        spec = load_spec(args.spec, inference=args.inference, overrides=args.set)
    bayes = isinstance(spec, BayesRunSpec)
    if args.prior and not bayes:
        raise PpgenError(f"--prior: {args.spec} is a generative model spec; prior predictive checks need [variables]")
    if bayes and launched():
        raise PpgenError(
            f"{args.spec}: torchrun trains model/guide pairs; a Bayesian spec runs in one process"
            " (its chains run in parallel with inference.chain_method)"
        )
    progress = False if args.quiet else None
    metrics = run(
        spec, out, resume=args.resume, force=args.force, progress=progress, background_plots=True, prior=args.prior
    )
    if bayes:
        print((out / "summary.txt").read_text(), end="")
        plots = "; plots are being drawn in the background" if metrics["plots"] == "background" else ""
        if args.prior:
            seconds = metrics["seconds"]
            print(f"prior predictive: {metrics['num_draws']} draws, {seconds:.1f} s; run folder: {out}{plots}")
            return 0
        chosen = "".join(f" ({value} {key})" for key, value in metrics.get("sampler", {}).items())
        print(f"{metrics['method']}{chosen}: {metrics['seconds']:.1f} s; run folder: {out}{plots}")
    else:
        from ppgen.infer import distributed

        if distributed.is_main():  # under torchrun every process returns the metrics; one prints them
            _report(metrics)
            print(f"run folder: {out}")
    return 0


def _compare(args) -> int:
    from ppgen.bayesian_run import compare_runs

    table = compare_runs(args.runs)[["rank", "elpd", "se", "elpd_diff", "dse", "p", "weight", "warning"]]
    print(table.to_string(float_format=lambda value: f"{value:.2f}", formatters={"weight": "{:.3f}".format}))
    print(
        "elpd: PSIS-LOO expected log predictive density (higher is better); elpd_diff, dse: from the best model and"
        " its se; weight: stacking weights (Yao et al. 2018), the mix of the models' predictions that best predicts"
        " left-out points"
    )
    return 0


def _sbc(args) -> int:
    from ppgen.calibration import run_calibration

    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.spec).stem}-sbc"
    result = run_calibration(
        args.spec,
        out,
        inference=args.inference,
        overrides=args.set,
        replicates=args.replicates,
        num_draws=args.draws,
        workers=args.workers,
        seed=args.seed,
        executor=args.executor,
        ray_address=args.ray_address,
    )
    verdict = "passed" if result.passed else "FAILED (ranks not uniform: the method is miscalibrated)"
    print(
        f"SBC {verdict}: p = {result.p_value:.3g} at alpha = {result.alpha}"
        f" ({result.num_replicates} replicates, {result.num_draws} draws each)"
    )
    worst = sorted(result.uniformity.items(), key=lambda item: item[1].min_p_value)
    for name, test in worst[:10]:
        print(f"  {name}: chi-square p = {test.chi_square_p_value:.3g}, KS p = {test.ks_p_value:.3g}")
    if len(worst) > 10:
        print(f"  ... {len(worst) - 10} more in sbc.json")
    print(f"run folder: {out}")
    return 0 if result.passed else EXIT_CHECK_FAILED


def _evaluate(args) -> int:
    from ppgen.generative_run import evaluate_run, evaluate_samples_run

    metrics, kept = {}, []
    if args.samples is None or args.num_samples is not None or args.max_examples is not None:
        metrics = evaluate_run(
            args.run, num_samples=args.num_samples, max_examples=args.max_examples, device=args.device
        )
        kept.append("test.nll_estimates" if "nll" in metrics.get("test", {}) else "the splits' figures")
    if args.samples is not None:  # alone, no likelihood: a GAN has none
        figures = evaluate_samples_run(args.run, args.samples, seed=args.seed, device=args.device)
        metrics = {**metrics, "test": {**metrics.get("test", {}), "samples": figures}}
        kept.append("test.samples_estimates")
    _report(metrics)
    print(f"recorded in {Path(args.run) / 'metrics.json'} beside every earlier estimate ({', '.join(kept)})")
    return 0


def _sample(args) -> int:
    from ppgen.generative_run import sample_run

    path = sample_run(
        args.run,
        args.num,
        args.out,
        seed=args.seed,
        device=args.device,
        sampler=args.sampler,
        label=args.label,
        guidance=args.guidance,
    )
    print(f"wrote {path}")
    return 0


def _classify(args) -> int:
    from ppgen.generative_run import classify_run

    figures = classify_run(args.run, num_samples=args.num_samples, max_examples=args.max_examples, device=args.device)
    print(
        f"test accuracy {figures['accuracy']:.4f}"
        f" ({figures['accuracy_num_examples']} examples, K = {figures['accuracy_num_samples']} per class)"
    )
    return 0


def _report(metrics: dict) -> None:
    """A short human-readable summary; metrics.json holds everything."""
    objective = metrics.get("training", {}).get("objective", "elbo")
    for split in ("train", "validation", "test"):
        figures = metrics.get(split, {})
        if "elbo" in figures:
            bits = figures.get("elbo_discrete_bits_per_dim", figures["elbo_bits_per_dim"])
            line = f"{split:>10}: ELBO {figures['elbo']:.3f} nats ({bits:.4f} bits/dim)"
        elif objective in figures:
            line = f"{split:>10}: {objective.replace('_', ' ')} {figures[objective]:.4g}"
        else:
            continue
        if "nll" in figures:
            used, total = figures["nll_num_examples"], figures["num_examples"]
            method = figures.get("nll_method", "importance-sampled")
            bits = figures.get("nll_discrete_bits_per_dim", figures["nll_bits_per_dim"])
            how = {
                "importance-sampled": f"K = {figures['nll_num_samples']}, ",
                "AIS": f"AIS, {figures['nll_num_samples']} chains, ",
            }.get(method, f"{method}, ")
            nll = (
                f"NLL {figures['nll']:.3f} +- {figures['nll_stderr']:.3f} nats"
                f" ({how}{used if used == total else f'first {used} of {total}'} examples"
            )
            if method == "importance-sampled":
                nll += f", median effective sample size {figures['nll_effective_sample_size_median']:.0f}"
            nll += f"; {bits:.4f} bits/dim)"
            if used == total:
                line += f"; {nll}"
            else:  # figures over different examples are not comparable: the NLL gets a line of its own
                line += f" over {total} examples\n{'':>10}  {nll}"
        print(line)
    test = metrics.get("test", {})
    if test.get("kl_per_site"):
        print("  KL per latent site (nats):", ", ".join(f"{k} {value:.2f}" for k, value in test["kl_per_site"].items()))
    if "accuracy" in test:
        print(
            f"  classification accuracy {test['accuracy']:.4f} ({test['accuracy_num_examples']} test examples,"
            f" K = {test['accuracy_num_samples']} per class)"
        )
    if "samples" in test:
        figures = test["samples"]
        low, high = figures["c2st_interval"]
        fid_error, kid_error = (
            "" if figures[key] is None else f" +- {figures[key]:.4g}" for key in ("fid_like_stderr", "kid_like_stderr")
        )
        binarized = ", drawn as Bernoulli(sample)" if figures["samples_binarized"] else ""
        block = (
            "  samples: {num_samples} model samples{binarized} vs {num_reference} test examples (seed {seed})\n"
            "    MMD^2 {mmd2:.4g} (p = {mmd2_p_value:.3g}, {mmd2_permutations} permutations; Gaussian kernel,"
            " median-heuristic sigma {mmd2_bandwidth:.3g})\n"
            "    classifier two-sample test: accuracy {c2st_accuracy:.3f} (95% interval {low:.3f}-{high:.3f},"
            " p = {c2st_p_value:.3g} against 0.5, {c2st_num_test} held-out examples)\n"
            "    features: {features}\n"
            "    FID-like {fid_like:.4g}{fid_error} (bootstrap); KID-like {kid_like:.4g}{kid_error} (sd over"
            " {kid_subsets} subsets of {kid_subset_size})\n"
            "    precision {precision:.3f} +- {precision_stderr:.3f}, recall {recall:.3f} +- {recall_stderr:.3f}"
            " (k = {k} nearest neighbours)"
        )
        extra = {"low": low, "high": high, "fid_error": fid_error, "kid_error": kid_error, "binarized": binarized}
        print(block.format(**figures, **extra))
    if "training" in metrics:
        print("  training:", json.dumps(metrics["training"]))
    warnings = list(metrics.get("warnings", []))
    if str(test.get("nll_method", "")).startswith("none"):
        print(f"  likelihood: {test['nll_method']}")
    if test.get("nll_warning"):
        warnings.append(test["nll_warning"])
    if "nll" in test and test.get("nll_method", "importance-sampled") == "importance-sampled":
        from ppgen.evaluate.bounds import effective_sample_size_warning

        ess = effective_sample_size_warning(test["nll_effective_sample_size_median"], test["nll_num_samples"])
        warnings += [ess] if ess else []
    for warning in warnings:
        print(f"ppgen: warning: {warning}", file=sys.stderr)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _predict(args) -> int:
    from ppgen.fitted import load, predictions_path, write_predictions

    predictions = load(args.run).predict(args.data, seed=args.seed)
    netcdf, table = write_predictions(
        predictions, args.out or predictions_path(args.run, args.data), replace=args.force
    )
    unseen = predictions.attrs["unseen_levels"]
    unseen = f"; group levels not in the training data ({unseen}) drawn from the population" if unseen else ""
    print(
        f"predictions for {predictions.sizes['row']} rows: {netcdf} (draws), {table} (mean, sd, 94% interval){unseen}"
    )
    return 0


def _show(args) -> int:
    from ppgen.spec.show import show_spec

    print(show_spec(args.spec, tuple(args.set)), end="")
    return 0


def _label(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a class number 0, 1, ..., got {text!r}")
    return int(text)


def _guidance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a guidance weight >= 0, got {text!r}")
    return value


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) >= 2**32:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**32 - 1, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppgen", description="Deep generative models and Bayesian analysis on Pyro.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train and evaluate a model spec, writing a run folder")
    run.add_argument("spec", help="model spec (TOML), e.g. models/vae.toml")
    run.add_argument("--inference", help="inference spec (TOML) replacing the model spec's [inference]/[evaluation]")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec key, e.g. model.latent_dim=32"
    )
    run.add_argument("--out", help="run folder (default runs/<spec name>)")
    again = run.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint, as its spec.toml says (SPEC only names the default"
        " --out); --set and --inference change settings, recorded in overrides.json",
    )
    again.add_argument("--force", action="store_true", help="replace the run already in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--prior",
        action="store_true",
        help="Bayesian specs: a prior predictive check against the data instead of the fit (inference.num_samples"
        " draws; default --out runs/<spec name>-prior)",
    )
    run.set_defaults(command=_run)

    evaluate = commands.add_parser(
        "evaluate", help="re-evaluate a finished generative run, adding the estimates to its metrics.json"
    )
    evaluate.add_argument("run", help="run folder")
    evaluate.add_argument("--num-samples", type=_positive_int, help="importance samples K per test example")
    evaluate.add_argument("--max-examples", type=_positive_int, help="evaluate the NLL on the first N test examples")
    evaluate.add_argument(
        "--samples",
        type=_positive_int,
        metavar="N",
        help="compare N model samples with N test examples (MMD, classifier test, FID-like, KID-like, precision/"
        "recall); alone, skips the likelihood evaluation",
    )
    evaluate.add_argument("--seed", type=_seed, default=0, help="seed of --samples' draws and tests (default 0)")
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda"))
    evaluate.set_defaults(command=_evaluate)

    sample = commands.add_parser("sample", help="draw samples from a finished run's model into a PNG grid")
    sample.add_argument("run", help="run folder")
    sample.add_argument("-n", dest="num", type=_positive_int, default=64, help="number of samples (default 64)")
    sample.add_argument("--out", help="PNG file (default samples-n<N>-seed<S>-<sampler>.png in the run folder)")
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument("--device", choices=("auto", "cpu", "cuda"))
    sample.add_argument(
        "--sampler",
        choices=("ancestral", "pc", "langevin"),
        help="overrides [sampling] sampler (diffusion, score and energy models have more than one)",
    )
    sample.add_argument("--label", type=_label, help="conditional diffusion models: draw this class (default each)")
    sample.add_argument(
        "--guidance", type=_guidance, help="conditional diffusion models: classifier-free guidance weight w >= 0"
    )
    sample.set_defaults(command=_sample)

    classify = commands.add_parser("classify", help="classify the test set of a labelled (cvae) run by likelihood")
    classify.add_argument("run", help="run folder")
    classify.add_argument(
        "--num-samples", type=_positive_int, help="importance samples K per class (default evaluation.classify_samples)"
    )
    classify.add_argument("--max-examples", type=_positive_int, help="classify the first N test examples")
    classify.add_argument("--device", choices=("auto", "cpu", "cuda"))
    classify.set_defaults(command=_classify)

    predict = commands.add_parser("predict", help="posterior predictive draws of a finished Bayesian run for new rows")
    predict.add_argument("run", help="run folder")
    predict.add_argument("--data", required=True, help="new rows: a .csv, .json or .npz file of columns")
    predict.add_argument(
        "--out", help="NetCDF file (default RUN/predictions-<data name>.nc, numbered past earlier ones; a CSV beside)"
    )
    predict.add_argument("--force", action="store_true", help="replace the --out file (and its CSV) if it exists")
    predict.add_argument("--seed", type=_seed, default=0)
    predict.set_defaults(command=_predict)

    show = commands.add_parser("show", help="print the model a spec describes (a formula as the variables it means)")
    show.add_argument("spec", help="model spec (TOML)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec key")
    show.set_defaults(command=_show)

    compare = commands.add_parser(
        "compare", help="rank finished Bayesian runs by expected log predictive density (LOO)"
    )
    compare.add_argument("runs", nargs="+", help="run folders holding posterior.nc")
    compare.set_defaults(command=_compare)

    sbc = commands.add_parser("sbc", help="simulation-based calibration of an inference method on a declarative model")
    sbc.add_argument("spec", help="declarative model spec (TOML)")
    sbc.add_argument("--inference", help="inference spec (TOML) replacing the model spec's [inference]")
    sbc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec key")
    sbc.add_argument("--replicates", type=_positive_int, default=100, help="simulated data sets (default 100)")
    sbc.add_argument("--draws", type=_positive_int, default=99, help="posterior draws ranked per replicate (L)")
    sbc.add_argument(
        "--workers",
        type=_positive_int,
        help="replicates fitted at once: worker processes (default 1: in this process), or the CPUs of a local Ray"
        " instance (default all cores)",
    )
    sbc.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="process",
        help="where replicates run: a local process pool, or Ray (pip install 'ppgen[ray]')",
    )
    sbc.add_argument(
        "--ray-address", help="a running Ray cluster for --executor ray (e.g. auto, HOST:6379); default a local one"
    )
    sbc.add_argument("--seed", type=_seed, default=0)
    sbc.add_argument("--out", help="folder for the rank histogram and metrics (default runs/<spec name>-sbc)")
    sbc.set_defaults(command=_sbc)
    return parser


if __name__ == "__main__":
    sys.exit(main())
