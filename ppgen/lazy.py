"""Package attributes that load their module on first use (PEP 562), so importing a package stays cheap: a
NumPyro run of a declarative model imports neither torch nor Pyro."""

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """(``__getattr__``, ``__dir__``) for ``package``, where ``exports`` maps each public name to the module that
    defines it. Usage, in the package's ``__init__``::

        __getattr__, __dir__ = lazy_exports(__name__, {"fit": "ppgen.infer.fitting"})
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, *vars(sys.modules[package])})

    return __getattr__, __dir__
