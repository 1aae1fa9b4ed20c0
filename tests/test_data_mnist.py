import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx

from ppgen.data.load import load_data
from ppgen.data.mnist import IMAGE_MAGIC, LABEL_MAGIC, load_mnist, parse_idx
from ppgen.errors import DataError

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Digit counts of the real files: the training counts from MNIST's provenance notes, the test counts from
# the MNIST site (e.g. 1135 ones).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _decode_index(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] * 255).round().long() * 256 + (x[:, 1] * 255).round().long()


@pytest.fixture
def mnist_copy(synthetic_mnist, tmp_path) -> Path:
    """A copy of the synthetic directory that a test may corrupt."""
    return Path(shutil.copytree(synthetic_mnist, tmp_path / "mnist"))


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_parse_idx_reads_small_files(tmp_path, suffix):
    images = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    labels = np.array([7, 0, 255, 3])
    parsed_images = parse_idx(write_idx(tmp_path / f"images{suffix}", IMAGE_MAGIC, images), IMAGE_MAGIC, (3, 4, 5))
    parsed_labels = parse_idx(write_idx(tmp_path / f"labels{suffix}", LABEL_MAGIC, labels), LABEL_MAGIC, (4,))
    assert parsed_images.dtype == np.uint8 and parsed_labels.dtype == np.uint8
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)


@pytest.mark.parametrize(
    ("magic", "shape", "payload_bytes", "expected_magic", "expected_shape", "message"),
    [
        (IMAGE_MAGIC, (2, 3, 3), None, LABEL_MAGIC, (2,), "bad magic number 2051 (expected 2049 for a label file)"),
        (LABEL_MAGIC, (2,), None, IMAGE_MAGIC, (2, 3, 3), "bad magic number 2049 (expected 2051 for an image file)"),
        (IMAGE_MAGIC, (2, 3, 3), None, IMAGE_MAGIC, (2, 3, 4), "header dimensions (2, 3, 3) (expected (2, 3, 4))"),
        (
            IMAGE_MAGIC,
            (2, 3, 3),
            17,
            IMAGE_MAGIC,
            (2, 3, 3),
            "payload of 17 bytes (the header's dimensions (2, 3, 3) need exactly 18; the file is truncated or padded)",
        ),
    ],
)
def test_parse_idx_rejects_wrong_headers_and_payloads(
    tmp_path, magic, shape, payload_bytes, expected_magic, expected_shape, message
):
    path = write_idx(tmp_path / "file.gz", magic, np.zeros(shape), payload_bytes)
    with pytest.raises(DataError) as error:
        parse_idx(path, expected_magic, expected_shape)
    assert str(error.value) == f"MNIST file {path}: {message}"


def test_parse_idx_rejects_padding_and_short_headers(tmp_path):
    padded = tmp_path / "padded"
    padded.write_bytes(LABEL_MAGIC.to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(3))
    with pytest.raises(DataError, match=r"longer than the 2 bytes of payload its header's dimensions \(2,\) need"):
        parse_idx(padded, LABEL_MAGIC, (2,))
    short = tmp_path / "short"
    short.write_bytes(LABEL_MAGIC.to_bytes(4, "big") + bytes(2))
    with pytest.raises(DataError) as error:
        parse_idx(short, LABEL_MAGIC, (2,))
    assert str(error.value) == f"MNIST file {short}: 6 bytes is too short for an IDX header of 8 bytes"


def test_parse_idx_rejects_unreadable_gzip(tmp_path):
    not_gzip = tmp_path / "labels.gz"
    not_gzip.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match=rf"^MNIST file {not_gzip}: cannot be read \(Not a gzipped file"):
        parse_idx(not_gzip, LABEL_MAGIC, (2,))
    cut = write_idx(tmp_path / "cut.gz", LABEL_MAGIC, np.arange(100))
    cut.write_bytes(cut.read_bytes()[:-12])
    with pytest.raises(DataError, match=rf"^MNIST file {cut}: cannot be read \("):
        parse_idx(cut, LABEL_MAGIC, (100,))


def test_load_mnist_reads_full_size_files(synthetic_mnist):
    train_x, train_y, test_x, test_y = load_mnist(synthetic_mnist)
    assert train_x.shape == (60000, 784) and test_x.shape == (10000, 784)
    assert train_x.dtype == test_x.dtype == torch.float32
    assert train_y.dtype == test_y.dtype == torch.int64
    assert torch.equal(_decode_index(train_x), torch.arange(60000))
    assert torch.equal(_decode_index(test_x), torch.arange(10000))
    assert torch.equal(train_y, torch.arange(60000) % 10)
    assert torch.equal(test_y, torch.arange(10000) % 10)
    assert train_x[:, 2:].abs().max() == 0.0
    assert train_x.max() == 1.0  # pixel 255 (the low byte of index 255) maps to exactly 1


def test_load_mnist_accepts_uncompressed_files(mnist_copy):
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        compressed = mnist_copy / f"{name}.gz"
        (mnist_copy / name).write_bytes(gzip.decompress(compressed.read_bytes()))
        compressed.unlink()
    _, train_y, _, test_y = load_mnist(mnist_copy)
    assert torch.equal(train_y, torch.arange(60000) % 10)
    assert torch.equal(test_y, torch.arange(10000) % 10)


def test_load_mnist_rejects_a_missing_directory(tmp_path):
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path / "nowhere")
    assert str(error.value) == f"MNIST directory {tmp_path / 'nowhere'} does not exist"


@pytest.mark.parametrize("name", NAMES)
def test_load_mnist_names_a_missing_file(mnist_copy, name):
    (mnist_copy / f"{name}.gz").unlink()
    with pytest.raises(DataError) as error:
        load_mnist(mnist_copy)
    assert str(error.value) == f"MNIST file {name}.gz (or {name}) not found in directory {mnist_copy}"


def test_load_mnist_names_a_file_with_a_bad_magic_number(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, IMAGE_MAGIC, np.zeros(10000))
    with pytest.raises(DataError) as error:
        load_mnist(mnist_copy)
    assert str(error.value) == f"MNIST file {path}: bad magic number 2051 (expected 2049 for a label file)"


def test_load_mnist_names_a_truncated_file(mnist_copy):
    path = mnist_copy / "t10k-images-idx3-ubyte.gz"
    write_idx(path, IMAGE_MAGIC, np.zeros((10000, 28, 28)), payload_bytes=10000 * 784 - 1)
    with pytest.raises(DataError, match=rf"^MNIST file {path}: payload of 7839999 bytes"):
        load_mnist(mnist_copy)


def test_load_mnist_names_a_file_with_the_wrong_count(mnist_copy):
    # Test labels where training labels belong: the counts of images and labels disagree.
    path = mnist_copy / "train-labels-idx1-ubyte.gz"
    shutil.copy(mnist_copy / "t10k-labels-idx1-ubyte.gz", path)
    with pytest.raises(DataError) as error:
        load_mnist(mnist_copy)
    assert str(error.value) == f"MNIST file {path}: header dimensions (10000,) (expected (60000,))"


def test_load_mnist_rejects_labels_that_are_not_digits(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    write_idx(path, LABEL_MAGIC, np.full(10000, 10))
    with pytest.raises(DataError) as error:
        load_mnist(mnist_copy)
    assert str(error.value) == f"MNIST file {path}: label 10 is not a digit 0..9"


def test_load_mnist_reads_the_real_files(shared_data):
    train_x, train_y, test_x, test_y = load_mnist(shared_data / "mnist")
    assert train_x.shape == (60000, 784) and test_x.shape == (10000, 784)
    assert (train_x.min(), train_x.max(), test_x.min(), test_x.max()) == (0.0, 1.0, 0.0, 1.0)
    assert torch.bincount(train_y).tolist() == TRAIN_COUNTS
    assert torch.bincount(test_y).tolist() == TEST_COUNTS
    assert (train_y[0].item(), test_y[0].item()) == (5, 7)  # the well-known first digits of each part


# load_data("mnist") is tested here, beside the synthetic files it needs.


def test_load_data_mnist_uses_the_official_test_split(synthetic_mnist):
    splits = load_data("mnist", path=synthetic_mnist, validation_fraction=0.1, test_fraction=0.5, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (54000, 6000, 10000)
    assert splits.event_shape == (28, 28) and splits.data_dim == 784 and splits.binarize == "none"
    assert torch.equal(_decode_index(splits.test.x), torch.arange(10000))
    assert torch.equal(splits.test.y, torch.arange(10000) % 10)
    train_index, validation_index = _decode_index(splits.train.x), _decode_index(splits.validation.x)
    assert torch.equal(torch.cat([train_index, validation_index]).sort().values, torch.arange(60000))
    assert torch.equal(splits.train.y, train_index % 10)
    other_seed = load_data("mnist", path=synthetic_mnist, seed=1)
    assert not torch.equal(_decode_index(other_seed.validation.x), validation_index)


def test_load_data_mnist_finds_the_directory_through_ppgen_data(synthetic_mnist, monkeypatch):
    monkeypatch.setenv("PPGEN_DATA", str(synthetic_mnist.parent))
    assert torch.equal(load_data("mnist").test.y, torch.arange(10000) % 10)


def test_load_data_mnist_without_a_directory(monkeypatch):
    monkeypatch.delenv("PPGEN_DATA", raising=False)
    with pytest.raises(DataError) as error:
        load_data("mnist")
    assert str(error.value) == (
        "MNIST needs the directory of its IDX files: set data.path, or PPGEN_DATA to a folder holding mnist/"
    )


def test_load_data_mnist_dynamic_binarization_of_the_real_files(shared_data):
    splits = load_data("mnist", path=shared_data / "mnist", binarize="dynamic", seed=0)
    assert splits.binarize == "dynamic"
    assert torch.equal(torch.bincount(splits.test.y), torch.tensor(TEST_COUNTS))
    assert set(splits.test.x.unique().tolist()) == {0.0, 1.0}
    assert ((splits.train.x > 0) & (splits.train.x < 1)).any()  # the training images keep their grey levels


def test_a_gzip_bomb_is_refused_without_decompressing_it_in_full(tmp_path):
    # 200 MB of zeros behind a valid header of 10 labels compress to about 200 KB; reading stops one byte past the
    # 10 the header allows, so memory stays far below the file's decompressed size.
    import gzip
    import tracemalloc

    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as stream:
        stream.write(LABEL_MAGIC.to_bytes(4, "big") + (10).to_bytes(4, "big"))
        for _ in range(200):
            stream.write(bytes(1_000_000))
    tracemalloc.start()
    with pytest.raises(DataError, match="longer than the 10 bytes of payload"):
        parse_idx(bomb, LABEL_MAGIC, (10,))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, peak
