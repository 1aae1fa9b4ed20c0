"""Fuzzed Bayesian specs through the loader the CLI uses: every one must end as a model or in ppgen's error types,
within a few seconds.

Each spec is drawn at random from a seed: tables with random keys (real ones, typos and junk) and values of any
TOML type; variables of every kind (distributions with random arguments, computed values, factors, observed
terms, plates, shapes) in chains up to thousands deep, diamonds, and fan-outs; random expressions nested up to a
few hundred levels; inline data with NaN, infinities and numbers of any size; data files (.npz, .csv, .json) that
are valid, truncated, bit-flipped or not UTF-8; tables and arrays nested up to thousands of levels; ``~user``
paths; inference tables and overrides of any type. Each is written to a temporary folder and checked with
``ppgen.spec.load.load_spec`` in this process (as ``ppgen run`` does before any inference), timed.

Prints the outcomes by exception type and the rate; exits 1 unless every outcome is "accepted" or one of ppgen's errors,
and none took over ``--seconds`` of CPU time (the process's: a check's own cost, which a loaded machine does not inflate
as it does wall time; single-threaded torch, as OMP_NUM_THREADS=1 gives, keeps it comparable). ``--keep DIR`` copies
each spec that failed (and its data file) there. The target is ``--count 100000``; a spec that hangs is stopped after
``--timeout`` wall seconds and counted.

    python bench/fuzz_specs.py [--count 100000] [--seed 0] [--start 0] [--seconds 5] [--timeout 60] [--keep DIR]
"""

import argparse
import collections
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tomli_w

from ppgen.errors import PpgenError
from ppgen.spec.language import DISTRIBUTIONS, FUNCTIONS
from ppgen.spec.load import load_spec
from ppgen.spec.variables import VARIABLE_KEYS

NAMES = ["mu", "sigma", "theta", "tau", "y", "x", "N", "J", "K", "z", "obs", "group", "t", "alpha", "beta"]
OPERATORS = ["+", "-", "*", "/", "**", "@", "<", ">=", "==", "and", "or", "%", "//", "if"]
TABLE_KEYS = ["model", "data", "plates", "variables", "inference", "guide", "evaluation", "sampling", "infernce"]
INFERENCE_KEYS = ["method", "backend", "num_samples", "num_chains", "num_warmup", "seed", "num_steps", "lr", "mass"]


class Hang(Exception):
    """A spec took longer than --timeout seconds."""


class SpecMaker:
    """Random specs (TOML text, an optional data file, overrides) from one seed. Half of them are wild (anything
    goes, almost all refused); the other half tame (valid choices, so that the model check runs)."""

    def __init__(self, seed: int):
        self.random = random.Random(seed)
        self.wild = self.random.random() < 0.5

    def pick(self, tame: list, wild: list = ()):
        """One of ``tame``, or of ``tame`` and ``wild`` together in a wild spec."""
        return self.random.choice([*tame, *wild] if self.wild else tame)

    def number(self):
        r = self.random
        odd = [0, -1, 2**63 - 1, 10**30, 1e308, -1e308, 1e-308, float("nan"), float("inf"), r.randint(0, 10**6)]
        return self.pick([r.randint(0, 10), round(r.uniform(-5, 5), 3)], odd)

    def value(self, depth: int = 0):
        """Any TOML value, nested a few levels."""
        r = self.random
        kind = r.randrange(7 if depth < 3 else 4)
        if kind == 0:
            return self.number()
        if kind == 1:
            return r.choice([True, False])
        if kind == 2:
            return r.choice(["", "nuts", "Normal(0, 1)", "~nosuchuser/x", "N", "x" * r.randint(0, 50), "\x00"])
        if kind == 3:
            return r.choice(NAMES)
        if kind in (4, 5):
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {r.choice(NAMES + INFERENCE_KEYS): self.value(depth + 1) for _ in range(r.randint(0, 3))}

    def expression(self, names: list[str], depth: int) -> str:
        r = self.random
        if depth <= 0 or r.random() < 0.25:
            return self.pick([*names, str(r.randint(0, 5)), "1.5"] if names else ["1.0"], ["-3", "1e308", "nan"])
        kind = self.pick([0, 0, 1, 2], [3, 4])
        if kind == 0:
            operator = self.pick(["+", "-", "*"], OPERATORS)
            return f"({self.expression(names, depth - 1)} {operator} {self.expression(names, depth - 1)})"
        if kind == 1:
            function = self.pick(["exp", "sum", "sqrt", "abs"], [*FUNCTIONS, "eval", "open"])
            count = 1 if function in ("exp", "sum", "sqrt", "abs") else r.randint(0, 3)
            return f"{function}({', '.join(self.expression(names, depth - 1) for _ in range(count))})"
        if kind == 2:
            return f"-{self.expression(names, depth - 1)}"
        if kind == 3:
            return f"{self.expression(names, depth - 1)}[{self.expression(names, depth - 1)}]"
        return "(" * r.randint(1, 300) + self.expression(names, depth - 1) + ")" * r.randint(1, 300)

    def distribution(self, names: list[str]) -> str:
        r = self.random
        name = self.pick(
            ["Normal", "Normal", "HalfNormal", "Exponential", "Gamma", "StudentT"], [*DISTRIBUTIONS, "Eval"]
        )
        signature = DISTRIBUTIONS.get(name)
        count = len(signature.required) if signature and (not self.wild or r.random() < 0.8) else r.randint(0, 3)
        params = signature.params if signature else ("x",) * count
        arguments = [
            self.expression(names, r.randint(0, 3)) if param in ("loc",) or self.wild else self.positive(names)
            for param in params[:count]
        ]
        if signature and signature.one_of and r.random() < 0.8:
            arguments.append(f"{r.choice(signature.one_of)}={self.expression(names, 1)}")
        return f"{name}({', '.join(arguments)})"

    def positive(self, names: list[str]) -> str:
        return self.random.choice(["1", "2.5", f"exp({self.expression(names, 2)})"])

    def variables(self, data: dict, plates: dict) -> dict:
        r = self.random
        variables: dict = {}
        names: list[str] = [key for key, value in data.items() if not isinstance(value, list)]
        shape = r.choice(["chain", "diamond", "fan", "random", "random", "random"])
        if shape == "chain":  # v0 = v1 + 1, v1 = v2 + 1, ...
            length = r.choice([3, 50, 1000, 5000])
            variables = {f"v{i}": {"value": f"v{i + 1} + 1"} for i in range(length)}
            variables[f"v{length}"] = "Normal(0, 1)"
            names = ["v0"]
        elif shape == "diamond":  # the paths to the end double at each level
            levels = r.randint(1, 40)
            variables["d0"] = "Normal(0, 1)"
            for i in range(levels):
                variables |= {f"a{i}": {"value": f"d{i} + 1"}, f"b{i}": {"value": f"d{i} * 2"}}
                variables[f"d{i + 1}"] = {"value": f"a{i} + b{i}"}
            names = [f"d{levels}"]
        elif shape == "fan":
            variables["root"] = "Normal(0, 1)"
            variables |= {f"f{i}": {"value": f"root + {i}"} for i in range(r.choice([10, 500, 3000]))}
            names = ["root", "f0"]
        if isinstance(data.get("y"), list) and "obs" in plates:
            variables["y"] = {"dist": f"Normal({r.choice(names) if names else 0}, 1)", "plate": "obs", "observed": "y"}
        for _ in range(r.randint(1, 6)):
            name = self.pick([f"w{r.randint(0, 99)}"], NAMES + ["1bad", "for"])
            entry: dict = {}
            kind = self.pick(["dist", "dist", "value"], ["factor", "observed", "junk"])
            if kind in ("dist", "observed"):
                entry["dist"] = self.distribution(names)
            elif kind == "value":
                entry["value"] = self.expression(names, r.randint(0, 6))
            elif kind == "factor":
                entry["factor"] = self.expression(names, r.randint(0, 4))
            else:
                entry[r.choice([*VARIABLE_KEYS, "dsit"])] = self.value()
            if kind == "observed":
                entry["observed"] = r.choice([*data, *names, "missing"])
            if self.wild and plates and r.random() < 0.5:
                entry["plate"] = r.choice([r.choice(list(plates)), list(plates), "nope"])
            if self.wild and r.random() < 0.1:
                entry["shape"] = [r.choice([2, "K", "N", -1, 10**20, "N - 5"])]
            if self.wild and r.random() < 0.05:
                entry[r.choice(VARIABLE_KEYS)] = self.value()
            variables[name] = entry["dist"] if list(entry) == ["dist"] and r.random() < 0.5 else entry
            names.append(name)
        return variables

    def data(self, n: int) -> dict:
        r = self.random
        data = {"N": n, "K": r.choice([1, 2, 5]), "y": [self.number() for _ in range(n)]}
        for key in r.sample(NAMES, r.randint(0, 3)) if self.wild else ["x"]:
            data[key] = r.choice(
                [
                    self.number(),
                    [self.number() for _ in range(n)],
                    [r.randint(0, 5) for _ in range(n)],
                    [[self.number() for _ in range(2)] for _ in range(r.randint(0, 3))],
                    self.value(),
                ]
            )
        return data

    def data_file(self, folder: Path, n: int) -> str:
        """A data file of columns y and x, n rows (valid, truncated, bit-flipped or re-encoded); its name."""
        r = self.random
        suffix = self.pick([".npz", ".csv", ".json"], [".txt"])
        path = folder / f"data{suffix}"
        columns = {"y": np.random.default_rng(r.randrange(2**32)).normal(size=n), "x": np.arange(n)}
        if suffix == ".npz":
            np.savez(path, **columns)
        elif suffix == ".csv":
            rows = [",".join(columns)] + [f"{y},{x}" for y, x in zip(*columns.values())]
            path.write_text("\n".join(rows) + "\n")
        else:
            path.write_text(str({k: v.tolist() for k, v in columns.items()}).replace("'", '"'))
        content = path.read_bytes()
        damage = self.pick(["none"], ["truncate", "flip", "latin-1", "junk"])
        if damage == "truncate":
            content = content[: r.randrange(len(content) + 1)]
        elif damage == "flip" and content:
            position = r.randrange(len(content))
            content = content[:position] + bytes([r.randrange(256)]) + content[position + 1 :]
        elif damage == "latin-1":
            content += "é\xff".encode("latin-1")
        elif damage == "junk":
            content = bytes(r.randrange(256) for _ in range(r.randint(0, 100)))
        path.write_bytes(content)
        return self.pick([path.name], [f"~nosuchuser/{path.name}", "missing.csv", "~/" + path.name])

    def spec(self, folder: Path) -> tuple[str, list[str]]:
        """The TOML text of a spec written into ``folder`` (with its data file) and the overrides to load it with."""
        r = self.random
        n = r.choice([1, 3, 10, 1000])
        data = self.data(n)
        plates = {"obs": "N"} if not self.wild else {r.choice(["obs", "group"]): r.choice(["N", 0, -1, 10**9, 1.5])}
        tables: dict = {"data": data, "plates": plates, "variables": self.variables(data, plates)}
        if r.random() < 0.3:
            tables["model"] = {"data_file": self.data_file(folder, n)}
            data.pop("y")
        tables["inference"] = {"num_samples": 10, "num_chains": 1, "backend": r.choice(["numpyro", "pyro"])}
        if self.wild:
            tables["inference"] = {k: self.value() for k in r.sample(INFERENCE_KEYS, r.randint(0, 3))}
            for _ in range(r.randint(0, 2)):
                tables[r.choice(TABLE_KEYS)] = self.value()
        text = tomli_w.dumps(tables)
        if self.wild and r.random() < 0.1:  # deep nesting, which tomli_w's recursion would refuse to write
            depth = r.choice([50, 300, 1000, 3000])
            nested = "[" * depth + "]" * depth if r.random() < 0.5 else "{a = " * depth + "1" + "}" * depth
            text = f"deep = {nested}\n{text}"
        key = f"{r.choice(['inference', 'data', 'plates', 'model'])}.{r.choice(INFERENCE_KEYS + NAMES)}"
        return text, [f"{key}={self.value()!r}"] if self.wild and r.random() < 0.3 else []


def check(path: Path, overrides: list[str], timeout: int) -> str:
    """ "accepted", or the type name of the exception that loading the spec raised ("Hang" past ``timeout``)."""

    def stop(signum, frame):
        raise Hang

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(timeout)
    try:
        load_spec(path, overrides=overrides)
        return "accepted"
    except Exception as error:  # noqa: BLE001 -- counted by type: that is the measurement
        return type(error).__name__
    finally:
        signal.alarm(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="how many specs to check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="the first spec's index (to continue a stopped run)")
    parser.add_argument("--seconds", type=float, default=5.0, help="the most CPU seconds one spec may take")
    parser.add_argument("--timeout", type=int, default=60, help="stop a spec after this many seconds")
    parser.add_argument("--keep", type=Path, help="copy the specs that failed into this folder")
    args = parser.parse_args()

    ppgen_errors = {cls.__name__ for cls in (PpgenError, *_subclasses(PpgenError))}
    outcomes: collections.Counter = collections.Counter()
    slow, slowest, failed = 0, 0.0, []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppgen-fuzz-") as root:
        for index in range(args.start, args.count):
            folder = Path(root) / str(index)
            folder.mkdir()
            text, overrides = SpecMaker(args.seed * 10**9 + index).spec(folder)
            path = folder / "spec.toml"
            path.write_text(text)
            begun = time.process_time()
            outcome = check(path, overrides, args.timeout)
            seconds = time.process_time() - begun
            outcomes[outcome] += 1
            slowest = max(slowest, seconds)
            bad = outcome not in ppgen_errors and outcome != "accepted"
            if seconds > args.seconds:
                slow += 1
            if (bad or seconds > args.seconds) and args.keep is not None:
                shutil.copytree(folder, args.keep / f"{index}-{outcome}", dirs_exist_ok=True)
            if bad:
                failed.append(f"spec {index}: {outcome}" + (f" (overrides {overrides})" if overrides else ""))
            shutil.rmtree(folder)
            if (index + 1) % 5000 == 0:  # a run stopped after this line continues with --start index + 1
                rate = (index + 1 - args.start) / (time.perf_counter() - started)
                print(f"{index + 1} specs, {rate:.1f}/s, not ppgen errors {len(failed)}, slow {slow}", flush=True)
    elapsed = time.perf_counter() - started
    checked = args.count - args.start
    rate = checked / elapsed
    print(f"specs {args.start}..{args.count - 1} in {elapsed:.0f} s ({rate:.1f} specs/s), seed {args.seed}")
    for outcome, count in outcomes.most_common():
        mark = "" if outcome in ppgen_errors or outcome == "accepted" else "   <- not a ppgen error"
        print(f"  {outcome:<20} {count:>8}{mark}")
    print(f"  over {args.seconds:g} CPU s: {slow} (slowest {slowest:.2f} s)")
    for line in failed[:20]:
        print(line)
    sys.exit(1 if failed or slow else 0)


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


if __name__ == "__main__":
    main()
