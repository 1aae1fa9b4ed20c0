"""The array backend: one class made for torch/Pyro or jax/NumPyro, each importing only its own libraries.

That the two agree on every function, operator and distribution is tested in test_expr.py.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppgen.models.backends import ArrayBackend, numpyro_backend, pyro_backend

REPO = Path(__file__).resolve().parents[1]

# Load the backend's two modules by path, without the ppgen package (whose __init__ imports torch), build one
# backend and print which array libraries are then loaded.
_CONSTRUCT = """
import importlib.util, sys
for name in ("dtypes", "effects", "backends"):
    spec = importlib.util.spec_from_file_location(f"ppgen.models.{name}", r"{root}/ppgen/models/" + name + ".py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
getattr(module, "{factory}")()
print(" ".join(m for m in ("torch", "pyro", "jax", "numpyro") if m in sys.modules))
"""


@pytest.mark.parametrize(
    ("factory", "loaded"), [("pyro_backend", ["torch", "pyro"]), ("numpyro_backend", ["jax", "numpyro"])]
)
def test_each_backend_imports_only_its_own_libraries(factory, loaded):
    code = _CONSTRUCT.replace("{root}", str(REPO)).replace("{factory}", factory)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == loaded


@pytest.mark.parametrize("factory", [pyro_backend, numpyro_backend])
def test_both_backends_are_the_one_class(factory):
    backend = factory()
    assert type(backend) is ArrayBackend
    assert backend.name == factory.__name__.removesuffix("_backend")


def test_the_torch_backend_keeps_its_dtype_and_device():
    import torch

    backend = pyro_backend(torch.float32, "cpu")
    assert backend.ones(2).dtype == torch.float32
    assert backend.asarray(np.array([1.0, 2.0])).dtype == torch.float32
    assert backend.add(backend.asarray(np.array([1, 2])), 0.5).dtype == torch.float32
    assert backend.asarray(np.array([True])).dtype == torch.int64


def test_the_torch_backend_keeps_its_dtype_in_comparisons_and_where():
    """Python floats and booleans never bring torch's float32 default or bool arithmetic into a float64 model,
    nor float64 into a float32 one."""
    import torch

    for dtype in (torch.float32, torch.float64):
        backend = pyro_backend(dtype, "cpu")
        n = backend.asarray(np.array([1, 2, 3]))
        positive = backend.gt(n, 1)
        assert positive.dtype == torch.bool
        assert backend.add(positive, positive).tolist() == [0, 2, 2]
        assert backend.where(positive, n, 0.5).dtype == dtype
        assert backend.stack([0.5, 1]).dtype == dtype
        assert backend.clip(n, 1.5, 2).dtype == dtype
        assert backend.sd(n).dtype == dtype
        assert backend.arange(3).dtype == torch.int64
