"""Read a TOML run spec once, apply an inference spec and ``--set key=value`` overrides, and validate it: into a
``RunSpec`` for a generative model, or a ``BayesRunSpec`` for a declarative Bayesian one (``kind = "bayes"``)."""

import tomllib
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tomli_w
from pydantic import BaseModel, ValidationError

from ppgen.errors import SpecError
from ppgen.spec.schema import RunSpec
from ppgen.suggest import suggest

if TYPE_CHECKING:
    from ppgen.spec.bayes_run import BayesRunSpec

__all__ = [
    "load_spec",
    "is_bayes_tree",
    "read_tree",
    "validate_tree",
    "parse_override",
    "validate_spec",
    "dump_spec",
    "parse_toml",
    "check_nesting",
    "expand_user",
]

T = TypeVar("T", bound=BaseModel)

MAX_NESTING = 64  # how deep the tables and arrays of a spec may nest

INFERENCE_TABLES = ("inference", "evaluation", "sampling")  # what an inference spec file may replace
MODEL_TABLES = tuple(table for table in RunSpec.model_fields if table not in INFERENCE_TABLES)


def load_spec(
    path: str | Path, *, inference: str | Path | None = None, overrides: Iterable[str] = ()
) -> "RunSpec | BayesRunSpec":
    """The run a spec file describes: read the file once, let an inference spec replace its inference tables,
    apply ``key=value`` overrides, and validate. A spec of ``model.kind = "bayes"`` (or with ``[variables]``)
    gives a ``BayesRunSpec``, any other a ``RunSpec``. An error names the file or override at fault.

    Relative paths written in a spec file are relative to that file; relative paths given as
    overrides are relative to the current directory.
    """
    tree = _read_toml(path)
    if is_bayes_tree(tree):
        from ppgen.spec.bayes_run import INFERENCE_TABLES as BAYES_INFERENCE_TABLES
        from ppgen.spec.bayes_run import MODEL_TABLES as BAYES_MODEL_TABLES
        from ppgen.spec.bayes_run import bayes_run_spec

        tables = {"inference_tables": BAYES_INFERENCE_TABLES, "model_tables": BAYES_MODEL_TABLES}
        tree, sources = read_tree(path, inference=inference, overrides=overrides, tree=tree, **tables)
        return bayes_run_spec(tree, sources, path)
    tree, sources = read_tree(path, inference=inference, overrides=overrides, tree=tree)
    return validate_tree(RunSpec, tree, sources, str(path))


def is_bayes_tree(tree: dict) -> bool:
    """Whether parsed spec tables describe a declarative Bayesian model: ``model.kind = "bayes"``, a
    ``[variables]`` table or a ``model.formula``."""
    model = tree.get("model")
    return "variables" in tree or (isinstance(model, dict) and (model.get("kind") == "bayes" or "formula" in model))


def read_tree(
    path: str | Path,
    *,
    inference: str | Path | None = None,
    overrides: Iterable[str] = (),
    inference_tables: tuple[str, ...] = INFERENCE_TABLES,
    model_tables: tuple[str, ...] = MODEL_TABLES,
    tree: dict | None = None,
) -> tuple[dict, dict[str, str]]:
    """The TOML tables of a model spec (``tree`` when the file was already read) with an inference spec's tables
    and the overrides applied, and the file or override each table or key came from (for error messages)."""
    tree = _read_toml(path) if tree is None else tree
    sources = {table: str(path) for table in tree}
    if inference is not None:
        extra = _read_toml(inference)
        for table in extra:
            if table not in inference_tables:
                if table in tree or table in model_tables:
                    raise SpecError(f"{inference}: [{table}] belongs in the model spec, not in an inference spec")
                allowed = ", ".join(f"[{name}]" for name in inference_tables)
                hint = suggest(table, inference_tables) or f" (an inference spec for {path} holds {allowed})"
                raise SpecError(f"{inference}: [{table}] is not an inference spec table{hint}")
            sources[table] = str(inference)
        tree.update(extra)
    for text in overrides:
        key, value = parse_override(text)
        if key == "data.path":
            if not isinstance(value, str):
                raise SpecError(f"--set {text}: data.path must be a path, not {value!r}")
            value = str(expand_user(value, f"--set {text}").absolute())
        _set_dotted(tree, key, value)
        sources[key] = f"--set {text}"
    return tree, sources


def validate_tree(root: type[T], tree: dict, sources: dict[str, str], default: str) -> T:
    """Validate tables into the spec type ``root``; the first problem becomes one SpecError line naming the
    file or override it came from and the dotted key."""
    try:
        return root.model_validate(tree)
    except ValidationError as error:
        key, message = _explain(error, root)
        raise SpecError(f"{_source(key, message, sources, default)}: {message}") from None


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
    except RecursionError:
        raise SpecError(f"override {key}: the value is nested too deeply") from None
    check_nesting(value, f"override {key}")
    return key, value


def validate_spec(tree: dict, source: str = "spec") -> RunSpec:
    """Validate a plain dict into a RunSpec; the first problem becomes one SpecError line naming the key."""
    try:
        return RunSpec.model_validate(tree)
    except ValidationError as error:
        raise SpecError(f"{source}: {_explain(error, RunSpec)[1]}") from None


def dump_spec(spec: RunSpec) -> str:
    """The fully resolved spec as TOML text (defaults included), loadable by ``load_spec``."""
    return tomli_w.dumps(spec.model_dump(mode="json", exclude_none=True))


def _read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    except OSError as error:
        raise SpecError(f"cannot read spec file {path}: {error.strerror}") from None
    tree = parse_toml(text, str(path))
    data = tree.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        data["path"] = str((path.parent / expand_user(data["path"], f"{path}: data.path")).absolute())
    return tree


def parse_toml(text: str, where: str) -> dict:
    """TOML text as tables; a SpecError naming ``where`` when it is not TOML or nests deeper than MAX_NESTING."""
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{where}: invalid TOML: {error}") from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise SpecError(f"{where}: tables and arrays nested more than {MAX_NESTING} levels deep") from None
    check_nesting(tree, where)
    return tree


def check_nesting(value: Any, where: str) -> None:
    """SpecError naming ``where`` unless tables and arrays nest at most MAX_NESTING levels deep (what reads a spec
    recurses through them)."""
    pending = [(value, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise SpecError(f"{where}: tables and arrays nested more than {MAX_NESTING} levels deep")
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending += [(item, depth + 1) for item in items if isinstance(item, dict | list)]


def expand_user(text: str, where: str) -> Path:
    """``text`` as a path with a leading ``~`` or ``~user`` expanded; SpecError naming ``where`` when there is no
    such home directory."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "Could not determine home directory"
        home = text.split("/", 1)[0]
        raise SpecError(f"{where}: {text!r} starts with {home!r}, but there is no such home directory") from None


def _source(key: str, message: str, sources: dict[str, str], default: str) -> str:
    """The file or override a faulty key came from, preferring the most specific match."""

    def rank(name: str) -> tuple[int, int]:
        if key == name or key.startswith((name + ".", name + "[")):  # the source set the key or its table
            return 3, len(name)
        if "." in name and name in message:  # a cross-field check names the key
            return 2, len(name)
        if "." in key and name.startswith(key + "."):  # the source reached through the key's value
            return 1, len(name)
        return 0, 0

    best = max(sources, key=rank, default=None)
    return sources[best] if best is not None and rank(best)[0] else default


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *tables, leaf = key.split(".")
    node = tree
    for depth, name in enumerate(tables):
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise SpecError(f"override {key}: {'.'.join(tables[: depth + 1])} is a value, not a table")
    node[leaf] = value


def _explain(error: ValidationError, root: type[BaseModel]) -> tuple[str, str]:
    """The dotted key of the first problem, and one line that names it and says what is wrong."""
    errors = error.errors()
    key, holder = _dotted_key(errors[0]["loc"], root)
    if errors[0]["type"] in ("union_tag_not_found", "union_tag_invalid") and isinstance(errors[0]["input"], dict):
        return f"{key}.{_tag_field(holder, key)}", _describe(errors[0], root)
    alternatives = [e for e in errors if _dotted_key(e["loc"], root)[0] == key]
    if len(alternatives) > 1:  # a value that fits none of a union's members
        expected = " or ".join(_lower(e["msg"]).removeprefix("input should be ") for e in alternatives)
        return key, f"{key}: expected {expected} (got {errors[0]['input']!r})"
    return key, _describe(errors[0], root)


def _describe(error: dict, root: type[BaseModel]) -> str:
    """One line for a pydantic error: the dotted key, what is wrong, and a suggestion when a name is close."""
    key, holder = _dotted_key(error["loc"], root)
    name = key.rsplit(".", 1)[-1]
    kind, value = error["type"], error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if kind in ("model_type", "dict_type", "model_attributes_type") or (
        kind.startswith("union_tag") and not isinstance(value, dict)
    ):
        return f"{key}: expected a table (got {value!r})"
    if kind == "extra_forbidden":
        return f"{key}: unknown key{suggest(name, holder.model_fields if holder else ())}"
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        tag = _tag_field(holder, key)
        known = ", ".join(repr(t) for t in _tags(holder, name))
        if kind == "union_tag_not_found":
            return f"{key}.{tag}: missing; expected one of {known}"
        return f"{key}.{tag}: {value.get(tag)!r} is not known; expected one of {known}"
    if kind == "literal_error":
        choices = [c.strip(" '") for c in error["ctx"]["expected"].replace(" or ", ", ").split(",")]
        return f"{key}: {value!r} is not allowed; expected {error['ctx']['expected']}{suggest(str(value), choices)}"
    if kind == "value_error":  # from a cross-field check, whose message names its keys
        return message
    if kind == "missing":
        return f"{key}: missing"
    return f"{key}: {_lower(message)} (got {value!r})"


def _dotted_key(loc: tuple, root: type[BaseModel]) -> tuple[str, type[BaseModel] | None]:
    """('model', 'vae', 'hidden', 0) -> ("model.hidden[0]", VAESpec): the key without union tags,
    and the table that holds its last part."""
    parts: list[str] = []
    table: type[BaseModel] | None = root
    holder = table
    items = list(loc)
    while items:
        item = items.pop(0)
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
            continue
        if table is None:  # a union member's label, not a key
            continue
        parts.append(item)
        holder = table
        field = table.model_fields.get(item)
        members = _table_types(field.annotation) if field else []
        table = members[0] if len(members) == 1 else None
        kinds = {tag: m for m in members for tag in _member_tags(m)}
        if items and items[0] in kinds:  # the tag of a union of tables told apart by their kind
            table = kinds[items.pop(0)]
    return ".".join(parts), holder


def _table_types(annotation: Any) -> list[type[BaseModel]]:
    """The spec tables (BaseModel classes) an annotation admits, looking through unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [table for arg in typing.get_args(annotation) for table in _table_types(arg)]


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:]


TAG_FIELDS = ("kind", "method")  # the keys that tell the tables of a union apart


def _member_tags(member: type[BaseModel]) -> tuple[str, ...]:
    """The values of a union member's tag field: ("hmc", "nuts") for a table with method: Literal["nuts", "hmc"]."""
    for field in TAG_FIELDS:
        if field in member.model_fields:
            return typing.get_args(member.model_fields[field].annotation)
    return ()


def _tags(holder: type[BaseModel] | None, name: str) -> list[str]:
    field = holder.model_fields.get(name) if holder else None
    members = _table_types(field.annotation) if field else []
    return list(dict.fromkeys(tag for member in members for tag in _member_tags(member)))


def _tag_field(holder: type[BaseModel] | None, key: str) -> str:
    field = holder.model_fields.get(key.rsplit(".", 1)[-1]) if holder else None
    members = _table_types(field.annotation) if field else []
    return next((f for m in members for f in TAG_FIELDS if f in m.model_fields), "kind")
