"""Declarative run specs: TOML files validated into typed tables."""

from ppgen.spec.load import dump_spec, load_spec, parse_override, validate_spec
from ppgen.spec.schema import DataSpec, EvaluationSpec, RunSpec, SVISpec, VAESpec

__all__ = [
    "RunSpec",
    "DataSpec",
    "VAESpec",
    "SVISpec",
    "EvaluationSpec",
    "load_spec",
    "dump_spec",
    "parse_override",
    "validate_spec",
]
