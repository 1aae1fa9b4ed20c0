"""Read TOML run specs, apply ``--set key=value`` overrides, and validate them into a RunSpec."""

import difflib
import tomllib
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from ppgen.errors import SpecError
from ppgen.spec.schema import RunSpec

__all__ = ["load_spec", "parse_override", "validate_spec", "dump_spec"]

INFERENCE_TABLES = ("inference", "evaluation")


def load_spec(path: str | Path, *, inference: str | Path | None = None, overrides: Iterable[str] = ()) -> RunSpec:
    """Read a model spec, let an inference spec replace its ``[inference]``/``[evaluation]`` tables,
    apply ``key=value`` overrides, and validate.

    Relative paths written in a spec file are relative to that file; relative paths given as
    overrides are relative to the current directory.
    """
    tree = _read_toml(path)
    if inference is not None:
        extra = _read_toml(inference)
        misplaced = sorted(set(extra) - set(INFERENCE_TABLES))
        if misplaced:
            raise SpecError(f"{inference}: [{misplaced[0]}] belongs in the model spec, not in an inference spec")
        tree.update(extra)
    for text in overrides:
        key, value = parse_override(text)
        if key == "data.path":
            value = str(Path(value).expanduser().absolute())
        _set_dotted(tree, key, value)
    return validate_spec(tree, source=str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"model.latent_dim=32"`` into the dotted key and a TOML value (bare words are strings)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
        raise SpecError(f"override {text!r} is not of the form key.path=value")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def validate_spec(tree: dict, source: str = "spec") -> RunSpec:
    """Validate a plain dict into a RunSpec; the first problem becomes one SpecError line naming the key."""
    try:
        return RunSpec.model_validate(tree)
    except ValidationError as error:
        errors = error.errors()
        key = _dotted_key(errors[0]["loc"])[0]
        alternatives = [e for e in errors if _dotted_key(e["loc"])[0] == key]
        if len(alternatives) > 1:  # a value that fits none of a union's members
            expected = " or ".join(_lower(e["msg"]).removeprefix("input should be ") for e in alternatives)
            raise SpecError(f"{source}: {key}: expected {expected} (got {errors[0]['input']!r})") from None
        raise SpecError(f"{source}: {_describe(errors[0])}") from None


def dump_spec(spec: RunSpec) -> str:
    """The fully resolved spec as TOML text (defaults included), loadable by ``load_spec``."""
    return tomli_w.dumps(spec.model_dump(mode="json", exclude_none=True))


def _read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except OSError as error:
        raise SpecError(f"cannot read spec file {path}: {error.strerror}") from None
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: invalid TOML: {error}") from None
    data = tree.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        data["path"] = str((path.parent / Path(data["path"]).expanduser()).absolute())
    return tree


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *tables, leaf = key.split(".")
    node = tree
    for depth, name in enumerate(tables):
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise SpecError(f"override {key}: {'.'.join(tables[: depth + 1])} is a value, not a table")
    node[leaf] = value


def _describe(error: dict) -> str:
    """One line for a pydantic error: the dotted key, what is wrong, and a suggestion when a name is close."""
    key, holder = _dotted_key(error["loc"])
    name = key.rsplit(".", 1)[-1]
    kind, value = error["type"], error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"{key}: unknown key{_suggest(name, holder.model_fields if holder else ())}"
    if kind == "union_tag_not_found":
        return f"{key}.kind: missing; expected one of {_kinds(holder, name)}"
    if kind == "union_tag_invalid":
        return f"{key}.kind: {value.get('kind')!r} is not known; expected one of {_kinds(holder, name)}"
    if kind == "literal_error":
        choices = [c.strip(" '") for c in error["ctx"]["expected"].replace(" or ", ", ").split(",")]
        return f"{key}: {value!r} is not allowed; expected {error['ctx']['expected']}{_suggest(str(value), choices)}"
    if kind == "value_error":  # from a cross-field check, whose message names its keys
        return message
    if kind in ("model_type", "dict_type"):
        return f"{key}: expected a table (got {value!r})"
    if kind == "missing":
        return f"{key}: missing"
    return f"{key}: {_lower(message)} (got {value!r})"


def _dotted_key(loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """('model', 'vae', 'hidden', 0) -> ("model.hidden[0]", VAESpec): the key without union tags,
    and the table that holds its last part."""
    parts: list[str] = []
    table: type[BaseModel] | None = RunSpec
    holder = table
    items = iter(loc)
    for item in items:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
            continue
        if table is None:  # a union member's label, not a key
            continue
        parts.append(item)
        holder = table
        field = table.model_fields.get(item) if table else None
        members = _table_types(field.annotation) if field else []
        if field is not None and field.discriminator:
            tag = next(items, None)
            table = next((m for m in members if m.model_fields["kind"].default == tag), None)
        else:
            table = members[0] if len(members) == 1 else None
    return ".".join(parts), holder


def _table_types(annotation: Any) -> list[type[BaseModel]]:
    """The spec tables (BaseModel classes) an annotation admits, looking through unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [table for arg in typing.get_args(annotation) for table in _table_types(arg)]


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:]


def _kinds(holder: type[BaseModel] | None, name: str) -> str:
    field = holder.model_fields.get(name) if holder else None
    members = _table_types(field.annotation) if field else []
    return ", ".join(repr(m.model_fields["kind"].default) for m in members)


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
