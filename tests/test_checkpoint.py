import os

import pytest
import torch

from ppgen.errors import TrainingError
from ppgen.files import atomic_open
from ppgen.infer import checkpoint as checkpoint_module
from ppgen.infer.checkpoint import load_checkpoint, save_checkpoint


def test_a_checkpoint_round_trips(tmp_path):
    state = {"step": 3, "weights": torch.arange(4.0), "nested": [{"rng": torch.get_rng_state()}]}
    save_checkpoint(state, tmp_path / "run" / "checkpoint.pt")
    loaded = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["weights"], state["weights"])
    assert torch.equal(loaded["nested"][0]["rng"], state["nested"][0]["rng"])


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)

    def broken_save(state, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_atomic_open_replaces_the_file_only_on_success(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as file:
            file.write("new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    with atomic_open(path, "w") as file:
        file.write("new")
    assert path.read_text() == "new"


class _Payload:
    """An arbitrary object: unpickling it would run code chosen by whoever wrote the file."""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no checkpoint at"),
        (b"not a checkpoint", "is corrupt or not a ppgen file: torch cannot read it"),
        (_Payload(), "is corrupt or not a ppgen file: it holds objects other than tensors and plain data"),
        ([1, 2], "is corrupt or not a ppgen file: it holds a list, not a dict"),
    ],
)
def test_missing_corrupt_or_unsafe_files_are_refused(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, list):
        torch.save(content, path)
    elif content is not None:
        torch.save({"payload": content}, path)
    with pytest.raises(TrainingError, match=message) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
