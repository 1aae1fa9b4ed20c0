import string
import tomllib
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from spec_files import INFERENCE_SPECS, MODEL_SPECS, REPO

from ppgen.errors import SpecError
from ppgen.spec.load import dump_spec, load_spec, parse_override, validate_spec
from ppgen.spec.schema import DataSpec, EvaluationSpec, RunSpec, SVISpec, VAESpec

VAE = REPO / "models" / "vae.toml"
KINDS = "'vae', 'cvae', 'hvae', 'flow', 'ddpm', 'nade', 'made', 'ebm', 'score', 'mixture', 'gan'"  # the zoo's kinds


TABLES = (DataSpec, VAESpec, SVISpec, EvaluationSpec)

BERNOULLI_NEEDS_BINARY = (
    "model.likelihood = 'bernoulli' needs binary data: set data.binarize to 'dynamic' or 'threshold',"
    " or use likelihood 'continuous_bernoulli' or 'gaussian'"
)
MNIST_TEST_FRACTION = "data.test_fraction does not apply to mnist, which has its official 10,000-image test split"
JIT_IWAE = "inference.jit is not available with elbo = 'iwae' (Pyro has no compiled RenyiELBO)"
NOT_AN_OVERRIDE = "override {!r} is not of the form key.path=value"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def spec_error(call, *args, **kwargs) -> str:
    """The message of the SpecError that call(*args, **kwargs) raises, checked to be one line."""
    with pytest.raises(SpecError) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


MISSING = "<no file>"  # the path is given but no file is written there

# (model spec text, inference spec text or None for no --inference, overrides, the whole message);
# {spec} and {inference} in a message stand for the two files' paths.
MISTAKES = {
    "unknown key": (
        '[model]\nkind = "vae"\nlatnt_dim = 3',
        None,
        [],
        "{spec}: model.latnt_dim: unknown key (did you mean 'latent_dim'?)",
    ),
    "unknown table": ("[modle]\nkind = 'vae'", None, [], "{spec}: modle: unknown key (did you mean 'model'?)"),
    "unknown key, nothing close": ("[data]\nzzz = 1", None, [], "{spec}: data.zzz: unknown key"),
    "wrong type": (
        '[model]\nkind = "vae"\nlatent_dim = "3"',
        None,
        [],
        "{spec}: model.latent_dim: input should be a valid integer (got '3')",
    ),
    "wrong type in a list": (
        '[model]\nkind = "vae"\nhidden = [16, "a"]',
        None,
        [],
        "{spec}: model.hidden[1]: input should be a valid integer (got 'a')",
    ),
    "string for a bool": (
        '[inference]\njit = "true"',
        None,
        [],
        "{spec}: inference.jit: input should be a valid boolean (got 'true')",
    ),
    "int for a bool": (
        "[inference]\nkeep_best = 1",
        None,
        [],
        "{spec}: inference.keep_best: input should be a valid boolean (got 1)",
    ),
    "out of range": (
        "[data]\nvalidation_fraction = 1.0",
        None,
        [],
        "{spec}: data.validation_fraction: input should be less than 1 (got 1.0)",
    ),
    "out of range in a list": (
        '[model]\nkind = "vae"\nhidden = [16, -2]',
        None,
        [],
        "{spec}: model.hidden[1]: input should be greater than 0 (got -2)",
    ),
    "fits no member of a union": (
        '[model]\nkind = "vae"\nlikelihood_scale = -1.0',
        None,
        [],
        "{spec}: model.likelihood_scale: expected 'learned' or greater than 0 (got -1.0)",
    ),
    "model.kind unknown": (
        '[model]\nkind = "vea"',
        None,
        [],
        "{spec}: model.kind: 'vea' is not known; expected one of " + KINDS,
    ),
    "literal not allowed, with suggestion": (
        '[model]\nkind = "vae"\nactivation = "rleu"',
        None,
        [],
        "{spec}: model.activation: 'rleu' is not allowed; expected 'relu', 'tanh', 'elu', 'gelu', 'silu',"
        " 'softplus' or 'leaky_relu' (did you mean 'relu'?)",
    ),
    "literal not allowed, nothing close": (
        '[inference]\nelbo = "xyz"',
        None,
        [],
        "{spec}: inference.elbo: 'xyz' is not allowed; expected 'auto', 'trace', 'meanfield' or 'iwae'",
    ),
    "test_fraction with MNIST": (
        '[data]\nname = "mnist"\ntest_fraction = 0.1',
        None,
        [],
        "{spec}: " + MNIST_TEST_FRACTION,
    ),
    "bernoulli with binarize none": ('[data]\nbinarize = "none"', None, [], "{spec}: " + BERNOULLI_NEEDS_BINARY),
    "jit with iwae": ('[inference]\nelbo = "iwae"\njit = true', None, [], "{spec}: " + JIT_IWAE),
    "kl warm-up with jit": (
        "[inference]\nkl_warmup = 5\njit = true",
        None,
        [],
        "{spec}: inference.kl_warmup needs elbo 'trace' or 'meanfield' without jit (a compiled loss fixes the weight;"
        " the importance-weighted bound has no separate KL part)",
    ),
    "guide for a flow density": (
        '[model]\nkind = "flow"\n[data]\nname = "moons"\nbinarize = "none"\n[guide]\nfamily = "iaf"',
        None,
        [],
        "{spec}: [guide] does not apply to model.kind = 'flow', which has no latent variables",
    ),
    "guidance for a vae": (
        "[sampling]\nguidance = 2.0",
        None,
        [],
        "{spec}: sampling.guidance applies to a label-conditional diffusion model (model.kind = 'ddpm' with"
        " model.conditional = true), not to model.kind = 'vae'",
    ),
    "sampler for a vae": (
        '[sampling]\nsampler = "pc"',
        None,
        [],
        "{spec}: sampling.sampler = 'pc' does not apply to model.kind = 'vae' (its samplers: 'ancestral')",
    ),
    "diffusion decoder that does not fit the data": (
        '[model]\nkind = "ddpm"\ndecoder = "bernoulli"\n[data]\nbinarize = "none"',
        None,
        [],
        "{spec}: model.decoder = 'bernoulli' does not fit data.binarize = 'none': use decoder 'bernoulli' for"
        " binarized data and 'discretized_gaussian' otherwise",
    ),
    "table given as a value": (
        '[model]\nkind = "vae"\nlatent_dim = {x = 1}',
        None,
        [],
        "{spec}: model.latent_dim: input should be a valid integer (got {{'x': 1}})",
    ),
    "value given as a table": ("data = 3", None, [], "{spec}: data: expected a table (got 3)"),
    "missing spec file": (MISSING, None, [], "spec file not found: {spec}"),
    "invalid TOML": (
        '[model\nkind = "vae"',
        None,
        [],
        "{spec}: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)",
    ),
    "invalid TOML in the inference spec": (
        "",
        "[inference\n",
        [],
        "{inference}: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 11)",
    ),
    "missing inference spec": ("", MISSING, [], "spec file not found: {inference}"),
    "[model] in an inference spec": (
        "",
        '[inference]\nlr = 0.1\n[model]\nkind = "vae"',
        [],
        "{inference}: [model] belongs in the model spec, not in an inference spec",
    ),
    "override without =": ("", None, ["novalue"], NOT_AN_OVERRIDE.format("novalue")),
    "override without key": ("", None, ["=3"], NOT_AN_OVERRIDE.format("=3")),
    "override with an empty key part": ("", None, ["a..b=1"], NOT_AN_OVERRIDE.format("a..b=1")),
    "override key with a space": ("", None, ["model.latent dim=3"], NOT_AN_OVERRIDE.format("model.latent dim=3")),
    "override through a value": (
        '[data]\nname = "digits"',
        None,
        ["data.name.x=1"],
        "override data.name.x: data.name is a value, not a table",
    ),
    "override of an unknown key": (
        "",
        None,
        ["inference.epoch=3"],
        "--set inference.epoch=3: inference.epoch: unknown key (did you mean 'epochs'?)",
    ),
    "override out of range": (
        "",
        None,
        ["inference.lr=-1"],
        "--set inference.lr=-1: inference.lr: input should be greater than 0 (got -1)",
    ),
    "override of model.kind": (
        '[model]\nkind = "vae"',
        None,
        ["model.kind=vea"],
        "--set model.kind=vea: model.kind: 'vea' is not known; expected one of " + KINDS,
    ),
    "override makes a cross-field mistake": (
        "",
        None,
        ["inference.elbo=iwae", "inference.jit=true"],
        "--set inference.jit=true: " + JIT_IWAE,
    ),
    "override of a table with a value": ("", None, ["model=3"], "--set model=3: model: expected a table (got 3)"),
    "non-string data.path override": ("", None, ["data.path=3"], "--set data.path=3: data.path must be a path, not 3"),
    "deeply nested override value": (
        "",
        None,
        ["model.hidden=" + "[" * 2000],
        "override model.hidden: the value is nested too deeply",
    ),
    "override to MNIST keeps the file's test_fraction": (
        "[data]\ntest_fraction = 0.2",
        None,
        ["data.name=mnist"],
        "{spec}: " + MNIST_TEST_FRACTION,
    ),
    "non-UTF-8 spec file": (b"\x80\x81 not text", None, [], "{spec}: not a UTF-8 text file"),
    "mistake inside the inference spec": (
        "",
        "[inference]\nlr = -1.0",
        [],
        "{inference}: inference.lr: input should be greater than 0 (got -1.0)",
    ),
    "misspelled table in the inference spec": (
        "",
        "[inferense]\nlr = 0.1",
        [],
        "{inference}: [inferense] is not an inference spec table (did you mean 'inference'?)",
    ),
    "value given as the [model] table": ('model = "vae"', None, [], "{spec}: model: expected a table (got 'vae')"),
    # Seeds go to numpy's and torch's generators, which both take [0, 2**32).
    "negative inference.seed": (
        "[inference]\nseed = -1",
        None,
        [],
        "{spec}: inference.seed: input should be greater than or equal to 0 (got -1)",
    ),
    "inference.seed of 2**32": (
        f"[inference]\nseed = {2**32}",
        None,
        [],
        f"{{spec}}: inference.seed: input should be less than {2**32} (got {2**32})",
    ),
    "negative data.seed": (
        "[data]\nseed = -1",
        None,
        [],
        "{spec}: data.seed: input should be greater than or equal to 0 (got -1)",
    ),
}


def load_case(tmp_path, spec_text, inference_text, overrides) -> tuple[str, dict]:
    """The one-line SpecError message of load_spec on files written from the texts, and the files' paths."""
    paths = {"spec": tmp_path / "spec.toml", "inference": tmp_path / "inference.toml"}
    for path, text in zip(paths.values(), (spec_text, inference_text)):
        if text not in (None, MISSING):
            write(path, text)
    inference = None if inference_text is None else paths["inference"]
    return spec_error(load_spec, paths["spec"], inference=inference, overrides=overrides), paths


@pytest.mark.parametrize("spec_text, inference_text, overrides, message", MISTAKES.values(), ids=MISTAKES.keys())
def test_user_mistakes_are_one_line_spec_errors(tmp_path, spec_text, inference_text, overrides, message):
    error, paths = load_case(tmp_path, spec_text, inference_text, overrides)
    assert error == message.format(**paths)


def test_a_model_table_without_a_kind_is_a_vae(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text("[model]\nlatent_dim = 3\n")
    assert load_spec(path).model == VAESpec(kind="vae", latent_dim=3)


def test_override_that_makes_a_value_a_table_is_named(tmp_path):
    message, _ = load_case(tmp_path, "", None, ["data.name.x=1"])
    assert message.startswith("--set data.name.x=1: data.name: ")


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("model.latent_dim=32", "model.latent_dim", 32),
        ("inference.lr=1e-3", "inference.lr", 1e-3),
        ("model.hidden=[10,20]", "model.hidden", [10, 20]),
        ("data.name=mnist", "data.name", "mnist"),  # a bare word is a string
        ('data.name="mnist"', "data.name", "mnist"),
        ("inference.jit=true", "inference.jit", True),
        (" inference.time_limit = 60.5 ", "inference.time_limit", 60.5),
        ("data.path=runs/a=b", "data.path", "runs/a=b"),  # only the first = splits key from value
        ("evaluation.max_examples=", "evaluation.max_examples", ""),
    ],
)
def test_override_values_are_toml_typed(text, key, value):
    parsed_key, parsed = parse_override(text)
    assert parsed_key == key
    assert parsed == value and type(parsed) is type(value)


def test_overrides_win_over_the_file_and_later_overrides_win():
    spec = load_spec(VAE, overrides=["model.latent_dim=32", "inference.lr=0.5", "inference.lr=0.25"])
    assert tomllib.loads(VAE.read_text())["model"]["latent_dim"] != 32
    assert (spec.model.latent_dim, spec.inference.lr) == (32, 0.25)


def test_inference_spec_replaces_inference_and_evaluation_tables(tmp_path):
    model = write(
        tmp_path / "model.toml",
        (
            '[data]\nseed = 3\n[model]\nkind = "vae"\nlatent_dim = 5\n'
            "[inference]\nepochs = 7\npatience = 4\nlr = 0.1\n[evaluation]\nnum_samples = 9\nmax_examples = 11\n"
        ),
    )
    inference = write(tmp_path / "inference.toml", "[inference]\nlr = 0.01\n[evaluation]\nelbo_particles = 2\n")
    spec = load_spec(model, inference=inference, overrides=["evaluation.num_samples=5"])
    assert spec.data == DataSpec(seed=3) and spec.model == VAESpec(latent_dim=5)
    # Keys the inference spec leaves out take their defaults, not the model spec's values.
    assert spec.inference == SVISpec(lr=0.01)
    assert spec.evaluation == EvaluationSpec(elbo_particles=2, num_samples=5)


@pytest.mark.parametrize("relative_spec_path", [False, True])
def test_data_path_in_a_file_is_relative_to_the_file(tmp_path, monkeypatch, relative_spec_path):
    write(tmp_path / "specs" / "s.toml", '[data]\nname = "file"\npath = "arrays/x.npz"\n')
    monkeypatch.chdir(tmp_path)
    spec = load_spec(Path("specs/s.toml") if relative_spec_path else tmp_path / "specs" / "s.toml")
    assert spec.data.path == tmp_path / "specs" / "arrays" / "x.npz"


def test_absolute_data_path_in_a_file_is_kept(tmp_path):
    spec = load_spec(write(tmp_path / "specs" / "s.toml", f'[data]\nname = "file"\npath = "{tmp_path / "x.npz"}"\n'))
    assert spec.data.path == tmp_path / "x.npz"


def test_data_path_override_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    spec_file = write(tmp_path / "specs" / "s.toml", '[data]\nname = "file"\npath = "in-spec.npz"\n')
    monkeypatch.chdir(write(tmp_path / "work" / "placeholder", "").parent)
    spec = load_spec(spec_file, overrides=["data.path=arrays/x.npz"])
    assert spec.data.path == tmp_path / "work" / "arrays" / "x.npz"


@pytest.mark.parametrize("inference", [None, *INFERENCE_SPECS], ids=lambda p: p and p.name)
@pytest.mark.parametrize("model", MODEL_SPECS, ids=lambda p: p.name)
def test_dumped_spec_loads_back_equal(tmp_path, model, inference):
    spec = load_spec(model, inference=inference, overrides=[f"data.path={tmp_path / 'data'}"])
    dumped = write(tmp_path / "elsewhere" / "spec.toml", dump_spec(spec))
    assert tomllib.loads(dumped.read_text())["data"]["path"] == str(tmp_path / "data")
    assert load_spec(dumped) == spec


def test_dump_spec_writes_every_key_that_has_a_value(tmp_path):
    spec = load_spec(write(tmp_path / "empty.toml", ""))
    tree = tomllib.loads(dump_spec(spec))
    for name in ("data", "model", "inference", "evaluation"):
        table = getattr(spec, name)
        assert set(tree[name]) == {key for key in type(table).model_fields if getattr(table, key) is not None}


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text())
def test_parse_override_returns_a_key_and_value_or_raises_spec_error(text):
    try:
        key, _ = parse_override(text)
    except SpecError as error:
        assert str(error) == NOT_AN_OVERRIDE.format(text)
        return
    assert key == text.partition("=")[0].strip()
    assert all(part.isidentifier() for part in key.split("."))


def _literal_values(annotation) -> list:
    """Every Literal choice an annotation admits, looking through unions, Annotated and lists."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literal_values(arg)]


FIELD_NAMES = sorted({"data", "model", "inference", "evaluation"} | {f for t in TABLES for f in t.model_fields})
keys = st.sampled_from(FIELD_NAMES) | st.text(string.ascii_lowercase + "_-", max_size=8)
scalars = st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=10)
toml_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=8
)


def field_values(field) -> st.SearchStrategy:
    """Values near the field's domain (its literals, small numbers, lists of them), and any TOML value."""
    literals = _literal_values(field.annotation)
    near = st.integers(-2, 300) | st.floats(-0.5, 1.5) | st.lists(st.integers(-2, 300), max_size=3)
    return (st.sampled_from(literals) if literals else near) | near | toml_values


def tables(table: type[BaseModel]) -> st.SearchStrategy:
    """Dicts with some of the table's keys, and now and then a junk key, a junk value or a non-dict."""
    known = st.fixed_dictionaries({}, optional={key: field_values(f) for key, f in table.model_fields.items()})
    junk = st.dictionaries(keys, toml_values, max_size=1)
    return st.tuples(known, junk).map(lambda pair: {**pair[0], **pair[1]}) | toml_values


trees = st.tuples(
    st.fixed_dictionaries({}, optional=dict(zip(("data", "model", "inference", "evaluation"), map(tables, TABLES)))),
    st.dictionaries(keys, toml_values, max_size=1),
).map(lambda pair: {**pair[0], **pair[1]})


@settings(max_examples=200, derandomize=True, deadline=None)
@given(trees)
def test_validate_spec_returns_a_run_spec_or_raises_spec_error(tree):
    try:
        spec = validate_spec(tree, source="fuzz.toml")
    except SpecError as error:
        message = str(error)
        assert message.startswith("fuzz.toml: ") and "\n" not in message
        return
    assert isinstance(spec, RunSpec) and isinstance(spec.model, BaseModel)
