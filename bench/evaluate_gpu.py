"""Throughput of the importance-sampled evaluator: log p(x) of the MNIST test set with K = 5000 samples each.

Trains the 784-200-200-50 tanh VAE of Burda et al. 2015 (arXiv:1509.00519) briefly on dynamically binarized
MNIST, or loads it from --checkpoint (written there when the file does not exist yet), then times
``ppgen.evaluate.log_likelihood`` on the first --num-test test images (binarized once with a fixed seed). The
chunk size is chosen from the free memory of the device (``choose_chunk_size``) unless --chunk-size is given;
choosing it, and a warm-up call, are left out of the timing. On a GPU the timing runs between two CUDA events.

Throughput is reported as examples/s and as FLOP/s counted from the networks' linear layers (2 * inputs *
outputs per row): each (example, sample) pair runs the decoder once, and each example runs the encoder once
per call that holds its samples. Activations, sampling and the Bernoulli log-density are left out, so the
count is a lower bound on the arithmetic done. The fraction of peak divides by the datasheet's dense FP32
peak of the GPU (its TF32 tensor-core peak with --tf32, which lets matmuls use TF32) found by
torch.cuda.get_device_name, or by --peak-tflops; on the CPU, or an unknown GPU, the peak is unknown.

    python bench/evaluate_gpu.py --device cuda [--num-test 10000] [--num-samples 5000] [--epochs 1]
    python bench/evaluate_gpu.py --device cpu --num-test 20 --num-samples 500 --train-examples 2000  # smoke
"""

import argparse
import hashlib
import math
import time
from pathlib import Path

import pyro
import torch
from timing import device_seconds  # bench/timing.py, next to this script

from ppgen.data import dynamic_binarize
from ppgen.data.load import load_data
from ppgen.device import resolve_device
from ppgen.evaluate.bounds import MEMORY_FRACTION, choose_chunk_size, free_memory, log_likelihood
from ppgen.infer import fit
from ppgen.infer.checkpoint import load_checkpoint, save_checkpoint
from ppgen.models import VAE

REPO = Path(__file__).resolve().parents[1]

# Datasheet peaks in TFLOP/s, dense (no sparsity): (FP32 on CUDA cores, TF32 on tensor cores or None). The
# first key found in torch.cuda.get_device_name() wins, so the more specific names come first.
PEAK_TFLOPS = {
    "H200": (67.0, 494.7),
    "H100 PCIe": (51.2, 378.0),
    "H100 NVL": (60.0, 417.5),
    "H100": (66.9, 494.7),  # SXM
    "A100": (19.5, 156.0),
    "L40S": (91.6, 183.0),
    "L4": (30.3, 60.0),
    "A10": (31.2, 62.5),  # A10 and A10G
    "V100": (15.7, None),
    "T4": (8.1, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"), help="IDX folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--checkpoint", help="the VAE's parameters: loaded if the file exists, else written")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs when not loading a checkpoint")
    parser.add_argument("--train-examples", type=int, default=None, help="train on the first n images only")
    parser.add_argument("--num-test", type=int, default=10000)
    parser.add_argument("--num-samples", type=int, default=5000, help="K")
    parser.add_argument("--chunk-size", type=int, default=None, help="(example, sample) pairs per call")
    parser.add_argument("--tf32", action="store_true", help="let CUDA matmuls use TF32 (and compare with its peak)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, overriding the table")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda" and args.tf32:
        torch.set_float32_matmul_precision("high")

    print(f"MNIST: {check_mnist(Path(args.mnist))}")
    splits = load_data("mnist", path=args.mnist, binarize="dynamic", seed=args.seed)
    vae = trained_vae(splits.train.x[: args.train_examples], args, device)
    test = splits.test.x[: args.num_test].to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; pyro {pyro.__version__}")

    vae.eval()
    pyro.set_rng_seed(args.seed)
    log_likelihood(vae.model, vae.guide, test[:2], num_samples=args.num_samples)  # warm-up: kernels, allocator
    chunk_size = args.chunk_size
    if chunk_size is None:
        budget = MEMORY_FRACTION * free_memory(device)
        chunk_size = choose_chunk_size(vae.model, vae.guide, test, num_samples=args.num_samples, memory_budget=budget)
        print(f"chunk size {chunk_size:,} pairs, chosen for a budget of {budget / 2**30:.2f} GiB")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result, seconds = device_seconds(
        lambda: log_likelihood(vae.model, vae.guide, test, num_samples=args.num_samples, chunk_size=chunk_size),
        device,
    )
    nll = -result.estimate.mean().item()
    nll_stderr = (result.stderr.square().sum().sqrt() / len(test)).item()

    num_test, k = len(test), args.num_samples
    calls_per_example = math.ceil(k / min(k, chunk_size))
    flops = num_test * k * linear_flops(vae.decoder) + num_test * calls_per_example * linear_flops(vae.encoder)
    achieved = flops / seconds
    print(f"test NLL of {num_test} images, K = {k}: {nll:.2f} +- {nll_stderr:.2f} nats")
    print(
        f"{seconds:.2f} s: {num_test / seconds:,.1f} examples/s, {num_test * k / seconds:,.0f} (example, sample)"
        f" pairs/s, {achieved / 1e9:,.1f} GFLOP/s ({flops / (num_test * k) / 1e6:.3f} MFLOP per pair)"
    )
    if device.type == "cuda":
        print(f"peak memory allocated: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    peak = peak_flops(name, args.tf32, args.peak_tflops) if device.type == "cuda" or args.peak_tflops else None
    if peak is None:
        print("fraction of peak: unknown (no peak FLOP/s for this device; give --peak-tflops)")
    else:
        print(f"fraction of peak: {achieved / peak:.1%} of {peak / 1e12:.1f} TFLOP/s")


def check_mnist(folder: Path) -> str:
    """The first line of the folder's PROVENANCE.md, once every file listed in its MD5SUMS matches."""
    sums = folder / "MD5SUMS"
    checked = []
    if sums.is_file():
        for line in sums.read_text().splitlines():
            expected, file_name = line.split()
            if hashlib.md5((folder / file_name).read_bytes()).hexdigest() != expected:
                raise SystemExit(f"{folder / file_name}: MD5 differs from {sums}")
            checked.append(file_name)
    provenance = folder / "PROVENANCE.md"
    title = provenance.read_text().splitlines()[0].lstrip("# ") if provenance.is_file() else "no PROVENANCE.md"
    return f"{title} ({folder}; MD5 of {len(checked)} files checked)"


def trained_vae(train: torch.Tensor, args, device: torch.device) -> VAE:
    torch.manual_seed(args.seed)
    vae = VAE(784, latent_dim=50, hidden=[200, 200], activation="tanh", likelihood="bernoulli")
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and checkpoint.exists():
        vae.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
        print(f"loaded {checkpoint}")
        return vae.to(device)
    started = time.perf_counter()
    result = fit(
        vae.model,
        vae.guide,
        train,
        epochs=args.epochs,
        batch_size=100,
        lr=1e-3,
        batch_transform=dynamic_binarize,
        device=device.type,
        seed=args.seed,
        progress=False,
        threads=args.threads,
    )
    print(
        f"trained {result.epochs} epoch(s), {result.steps} steps on {len(train)} images in"
        f" {time.perf_counter() - started:.1f} s; final training ELBO {result.train_elbo[-1][1]:.2f}"
    )
    if checkpoint is not None:
        save_checkpoint({"state_dict": vae.state_dict(), "epochs": result.epochs}, checkpoint)
    return vae.to(device)


def linear_flops(module: torch.nn.Module) -> int:
    """FLOPs of one row through every nn.Linear of module: a multiply and an add per weight."""
    return sum(
        2 * layer.in_features * layer.out_features for layer in module.modules() if isinstance(layer, torch.nn.Linear)
    )


def peak_flops(device_name: str, tf32: bool, override_tflops: float | None) -> float | None:
    """FLOP/s: the override, else the table's entry for the first key in device_name, else None."""
    if override_tflops is not None:
        return override_tflops * 1e12
    for key, (fp32, tf32_peak) in PEAK_TFLOPS.items():
        if key in device_name:
            peak = tf32_peak if tf32 else fp32
            return None if peak is None else peak * 1e12
    return None


if __name__ == "__main__":
    main()
