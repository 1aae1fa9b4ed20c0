"""Checkpoint files: an ``SVIState`` as plain data, written atomically, read without unpickling code.

Format 2 (written): {"format": 2, "position": {"step", "epoch", "batch"}, "parameters": {"modules", "store"},
"optimizer", "scheduler", "rng": [each process's {"cpu", "cuda"} random state, in rank order], "train_elbo",
"validation_elbo", "best", "epochs_since_best"}. Format 1 (read) had one process's "rng", with every CUDA
device's state.
"""

import pickle
import warnings
from pathlib import Path

import numpy as np
import pyro
import torch

from ppgen.errors import TrainingError
from ppgen.files import atomic_open
from ppgen.infer import distributed
from ppgen.infer.svi import SVIState

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "svi_state_dict", "load_svi_state"]

CHECKPOINT_FORMAT = 2  # 2: the random state of every process, in rank order
CHECKPOINT_KEYS = ("position", "parameters", "optimizer", "scheduler", "rng", "train_elbo", "validation_elbo", "best")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts) so that ``path`` is always either
    the previous complete checkpoint or the new complete one, even if the process dies mid-write."""
    with atomic_open(path) as file:
        torch.save(state, file)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint (or ``model.pt``) with ``weights_only=True``: plain data and tensors only, never arbitrary
    objects. A missing, unreadable or corrupt file, or one holding anything but a dict, is one line naming it."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"no checkpoint at {path}") from None
    except OSError as error:
        raise TrainingError(f"cannot read {path}: {error.strerror}") from None
    except Exception as error:  # torch raises RuntimeError, KeyError, EOFError, UnpicklingError... for a bad file
        # Its message for a file holding other objects suggests weights_only=False, which would run the file's code.
        unsafe = isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error)
        reason = "it holds objects other than tensors and plain data, which ppgen never loads" if unsafe else None
        raise TrainingError(
            f"{path} is corrupt or not a ppgen file: {reason or 'torch cannot read it (cut short or damaged?)'}"
        ) from None
    if not isinstance(saved, dict):
        raise TrainingError(f"{path} is corrupt or not a ppgen file: it holds a {type(saved).__name__}, not a dict")
    return saved


def rng_state(device: torch.device) -> dict:
    """This process's random state: {"cpu": torch's, "cuda": the device's or None}."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def svi_state_dict(state: SVIState, rng: list[dict]) -> dict:
    """The training state as a checkpoint; ``rng`` holds every process's ``rng_state``, in rank order."""
    return {
        "format": CHECKPOINT_FORMAT,
        "position": {"step": state.step, "epoch": state.epoch, "batch": state.batch},
        "parameters": state.parameters(copy=False),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "rng": rng,
        "train_elbo": [list(pair) for pair in state.train_elbo],
        "validation_elbo": [list(pair) for pair in state.validation_elbo],
        "best": state.best,
        "epochs_since_best": state.epochs_since_best,
    }


def load_svi_state(state: SVIState, saved: dict) -> SVIState:
    """``state`` (from ``svi_init`` with the same model, guide and settings) continued from the checkpoint
    ``saved``, this process's random state included; returns it."""
    if saved.get("format") not in (1, CHECKPOINT_FORMAT):
        raise TrainingError(f"checkpoint format {saved.get('format')!r} is not {CHECKPOINT_FORMAT}")
    missing = [key for key in CHECKPOINT_KEYS if key not in saved]
    if missing:
        raise TrainingError(f"the checkpoint is corrupt: it has no {missing[0]!r}")
    state.load_parameters(saved["parameters"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.scheduler is not None and saved["scheduler"] is not None:
        state.scheduler.load_state_dict(saved["scheduler"])
    position = saved["position"]
    state.step, state.epoch, state.batch = position["step"], position["epoch"], position["batch"]
    if state.batch >= state.batches_per_epoch:
        raise TrainingError(
            f"the checkpoint stopped at batch {state.batch} of an epoch, but this data set and batch size"
            f" give {state.batches_per_epoch} batches per epoch"
        )
    state.train_elbo = [tuple(pair) for pair in saved["train_elbo"]]
    state.validation_elbo = [tuple(pair) for pair in saved["validation_elbo"]]
    state.best = saved["best"]
    state.epochs_since_best = saved["epochs_since_best"]
    rng = saved["rng"] if saved["format"] == CHECKPOINT_FORMAT else [_format_1_rng(saved["rng"])]
    _load_rng_state(state, rng)
    return state


def _load_rng_state(state: SVIState, states: list[dict]) -> None:
    world = distributed.world_size()
    if len(states) != world:
        warnings.warn(
            f"the checkpoint holds the random state of {len(states)} processes and this run has {world}:"
            " each process is reseeded, so training goes on but does not repeat an uninterrupted run",
            stacklevel=4,
        )
        seed = np.random.SeedSequence([state.settings.seed, state.step]).generate_state(1, dtype=np.uint32)[0]
        pyro.set_rng_seed(distributed.rank_seed(int(seed)))
        return
    mine = states[distributed.rank()]
    torch.set_rng_state(mine["cpu"])
    if mine["cuda"] is not None and state.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], state.device)


def _format_1_rng(rng: dict) -> dict:
    """A format-1 checkpoint's random state (one process; every CUDA device's) as format 2 has it."""
    return {"cpu": rng["cpu"], "cuda": rng["cuda"][torch.cuda.current_device()] if rng["cuda"] else None}
