"""Training steps per second with a quiet machine and with one core busy: torch's thread defaults against ppgen's.

Each measurement runs ``ppgen.fit`` (the trainer ``ppgen run`` uses) in a fresh process, since OpenMP reads its
wait policy once, when torch loads. Three settings:
  torch defaults  torch imported before ppgen (so ppgen leaves OpenMP alone), threads = one per core
  one thread      ppgen's OpenMP setting, threads = 1
  ppgen           ppgen's choice (``threads = "auto"``, see ppgen.threads)
"Busy" means a second process spins on one core for the whole measurement (this script starts and stops it).
With --main-job it also times the whole command ``ppgen run models/vae.toml`` both ways.

    python bench/threads.py [--seconds 6] [--main-job]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name -> (VAE options, data dimension, batch size): the digits demo (models/vae.toml) and Burda et al.'s MNIST VAE
MODELS = {
    "digits VAE 64-256-256-8, batch 64": (dict(hidden=[256, 256], latent_dim=8, activation="tanh"), 64, 64),
    "Burda VAE 784-200-200-50, batch 100": (dict(hidden=[200, 200], latent_dim=50, activation="tanh"), 784, 100),
}
SETTINGS = ("torch defaults", "one thread", "ppgen")
LIBGOMP_DEFAULT_SPIN = "300000"  # libgomp's spin count when OMP_WAIT_POLICY is unset


def worker(model: str, setting: str, seconds: float) -> None:
    """Train ``model`` for ``seconds`` in this process and print {"steps_per_second", "threads"} as JSON."""
    if setting == "torch defaults":
        import torch  # before ppgen, which then leaves OpenMP's settings alone

        threads = torch.get_num_threads()
    else:
        threads = {"one thread": 1, "ppgen": "auto"}[setting]
    import torch

    from ppgen.infer import fit
    from ppgen.models import VAE

    options, dim, batch = MODELS[model]
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((batch * 50, dim), 0.2))
    vae = VAE(dim, **options)
    fit(vae.model, vae.guide, x, epochs=1, batch_size=batch, progress=False, threads=threads)  # warm-up
    result = fit(
        vae.model, vae.guide, x, epochs=10**6, batch_size=batch, time_limit=seconds, progress=False, threads=threads
    )
    print(json.dumps({"steps_per_second": result.steps / result.seconds, "threads": result.threads}))


@contextmanager
def busy_core(busy: bool):
    """A process spinning on one core while the block runs (nothing when not ``busy``)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def measure(model: str, setting: str, seconds: float) -> dict:
    environment = dict(os.environ)
    if setting == "torch defaults":
        environment.pop("GOMP_SPINCOUNT", None)
    command = [sys.executable, __file__, "--worker", model, setting, "--seconds", str(seconds)]
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main_job_seconds(setting: str) -> float:
    """Wall seconds of ``ppgen run models/vae.toml`` as a whole process."""
    environment = dict(os.environ)
    with tempfile.TemporaryDirectory() as scratch:
        command = ["ppgen", "run", str(ROOT / "models" / "vae.toml"), "--quiet", "--out", f"{scratch}/run"]
        if setting == "torch defaults":
            environment["GOMP_SPINCOUNT"] = LIBGOMP_DEFAULT_SPIN
            command += ["--set", f"inference.threads={os.cpu_count()}"]
        start = time.perf_counter()
        subprocess.run(command, env=environment, capture_output=True, check=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="training seconds per measurement")
    parser.add_argument("--main-job", action="store_true", help="also time `ppgen run models/vae.toml`")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.seconds)
        return
    print(f"steps/s of ppgen.fit, {os.cpu_count()} CPUs, {args.seconds:g} s per measurement")
    print(f"{'model':<38}{'load':<7}" + "".join(f"{s:>16}" for s in SETTINGS) + f"{'ppgen/defaults':>16}")
    for model in MODELS:
        for busy in (False, True):
            with busy_core(busy):
                rates = {setting: measure(model, setting, args.seconds) for setting in SETTINGS}
            cells = "".join(f"{r['steps_per_second']:>11.1f} ({r['threads']}t)" for r in rates.values())
            ratio = rates["ppgen"]["steps_per_second"] / rates["torch defaults"]["steps_per_second"]
            print(f"{model:<38}{'busy' if busy else 'quiet':<7}{cells}{ratio:>16.2f}", flush=True)
    if args.main_job:
        print("\nppgen run models/vae.toml, wall seconds of the whole command")
        for busy in (False, True):
            with busy_core(busy):
                times = {setting: main_job_seconds(setting) for setting in ("torch defaults", "ppgen")}
            print(
                f"{'busy' if busy else 'quiet':<7} torch defaults {times['torch defaults']:6.1f} s"
                f"   ppgen {times['ppgen']:6.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
