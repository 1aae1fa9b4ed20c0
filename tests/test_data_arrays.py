import numpy as np
import pytest
import torch

from ppgen.data.arrays import load_array_file
from ppgen.errors import DataError


def _load_error(path) -> str:
    with pytest.raises(DataError) as error:
        load_array_file(path)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_npz_with_x_and_y(tmp_path):
    x = np.random.default_rng(0).random((6, 4, 3))
    y = np.array([0, 1, 2, 1, 0, 9], dtype=np.int32)
    np.savez(tmp_path / "data.npz", x=x, y=y, extra=np.zeros(2))
    features, labels, event_shape = load_array_file(tmp_path / "data.npz")
    assert features.shape == (6, 12) and features.dtype == torch.float32 and features.is_contiguous()
    assert torch.equal(features, torch.from_numpy(x.reshape(6, 12).astype(np.float32)))
    assert labels.dtype == torch.int64 and labels.tolist() == y.tolist()
    assert event_shape == (4, 3)


def test_npz_with_one_unnamed_array(tmp_path):
    np.savez(tmp_path / "data.npz", np.arange(10, dtype=np.uint8).reshape(5, 2))
    features, labels, event_shape = load_array_file(str(tmp_path / "data.npz"))
    assert features.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    assert labels is None and event_shape == (2,)


def test_npz_with_several_arrays_but_no_x(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, images=np.zeros((2, 2)), y=np.zeros(2))
    assert _load_error(path) == (
        f"data file {path}: no array named 'x' among its arrays ['images', 'y'] (needs 'x', or exactly one array)"
    )


def test_npy_and_an_uppercase_suffix(tmp_path):
    x = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    np.save(tmp_path / "data.npy", x)
    (tmp_path / "data.npy").rename(tmp_path / "DATA.NPY")
    features, labels, event_shape = load_array_file(tmp_path / "DATA.NPY")
    assert features.shape == (2, 12) and features.dtype == torch.float32 and features[1, 11] == 23.0
    assert labels is None and event_shape == (3, 4)


def test_npy_holding_an_archive(tmp_path):
    path = tmp_path / "data.npy"
    np.savez(path.with_suffix(".npz"), x=np.zeros((2, 2)))
    path.with_suffix(".npz").rename(path)
    assert _load_error(path).startswith(f"data file {path}: cannot be read as .npy (the magic string is not correct")


@pytest.mark.parametrize(
    "text",
    ["x0,x1,x2\n1,2,3\n4.5,-6,7e-1\n", "1,2,3\n\n4.5,-6,7e-1\n\n", '"a","b","c"\r\n1,2,3\r\n4.5, -6 ,7e-1\r\n'],
)
def test_csv_with_and_without_header(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text)
    features, labels, event_shape = load_array_file(path)
    assert torch.equal(features, torch.tensor([[1.0, 2.0, 3.0], [4.5, -6.0, 0.7]]))
    assert labels is None and event_shape == (3,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3,x\n", "line 3, column 2: 'x' is not a finite number"),
        ("1,2\n3,4,\n", "line 2, column 3: '' is not a finite number"),
        ("1,2\n3,nan\n", "line 2, column 2: 'nan' is not a finite number"),
        ("1,2\n-inf,2\n", "line 2, column 1: '-inf' is not a finite number"),
        ("a,b\nc,d\n", "line 2, column 1: 'c' is not a finite number"),
        ("1,2\n\n3\n", "line 3 has 1 values, expected 2"),
        ("a,b\n", "no rows of numbers"),
        ("", "no rows of numbers"),
    ],
)
def test_csv_errors_say_where(tmp_path, text, message):
    path = tmp_path / "data.csv"
    path.write_text(text)
    assert _load_error(path) == f"data file {path}: {message}"


def test_missing_file_and_unknown_suffix(tmp_path):
    assert _load_error(tmp_path / "none.npz") == f"data file {tmp_path / 'none.npz'} does not exist"
    path = tmp_path / "data.txt"
    path.write_text("1,2\n")
    assert _load_error(path) == f"data file {path}: unsupported suffix '.txt' (supported: .npz, .npy, .csv)"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("data.npz", b"not a zip archive", "File is not a zip file"),
        ("data.npy", b"not an array", "the magic string is not correct"),
        ("data.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8',", ""),
        ("data.csv", b"1,2\n\xff\xfe,3\n", "'utf-8' codec can't decode byte 0xff"),
    ],
)
def test_corrupt_files(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    message = _load_error(path)
    assert message.startswith(f"data file {path}: cannot be read as {path.suffix} (") and reason in message


def test_pickled_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    assert _load_error(path) == (
        f"data file {path}: cannot be read as .npy (Object arrays cannot be loaded when allow_pickle=False)"
    )


def test_truncated_npz(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((100, 100)))
    path.write_bytes(path.read_bytes()[:-200])
    assert _load_error(path).startswith(f"data file {path}: cannot be read as .npz (")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.arange(5.0), "x has shape (5,), expected [N, ...] with at least 2 dimensions"),
        (np.zeros((0, 3)), "x has shape (0, 3), which holds no values"),
        (np.zeros((3, 0)), "x has shape (3, 0), which holds no values"),
        (np.array([["a", "b"]]), "x has dtype <U1, expected real numbers"),
        (np.ones((2, 2), dtype=np.complex64), "x has dtype complex64, expected real numbers"),
        (np.array([[0.0, 1.0], [2.0, np.nan]]), "x[1, 1] = nan is not a finite float32"),
        (np.array([[[0.0], [1.0]], [[np.inf], [3.0]]]), "x[1, 0, 0] = inf is not a finite float32"),
        (np.array([[0.0, 1e39]]), "x[0, 1] = 1e+39 is not a finite float32"),
    ],
)
def test_bad_x(tmp_path, x, message):
    path = tmp_path / "data.npy"
    np.save(path, x)
    assert _load_error(path) == f"data file {path}: {message}"


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.zeros(3, dtype=np.int64), "y has shape (3,), expected (4,), one label per example"),
        (np.zeros((4, 1), dtype=np.int64), "y has shape (4, 1), expected (4,), one label per example"),
        (np.array([0.0, 1.0, 0.5, 2.0]), "y[2] = 0.5 is not a non-negative integer label"),
        (np.array([0.0, 1.0, 2.0, np.nan]), "y[3] = nan is not a non-negative integer label"),
        (np.array([0, -1, 2, 3]), "y[1] = -1 is not a non-negative integer label"),
        (np.array(["a", "b", "c", "d"]), "y has dtype <U1, expected integer labels"),
    ],
)
def test_bad_y(tmp_path, y, message):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 2)), y=y)
    assert _load_error(path) == f"data file {path}: {message}"


def test_whole_float_and_boolean_labels_become_int64(tmp_path):
    for y in (np.array([0.0, 3.0, 1.0]), np.array([True, False, True])):
        np.savez(tmp_path / "data.npz", x=np.zeros((3, 2)), y=y)
        labels = load_array_file(tmp_path / "data.npz")[1]
        assert labels.dtype == torch.int64 and labels.tolist() == y.astype(np.int64).tolist()
