"""Bad specs end in one line of ppgen's error types, checking is linear in the spec's size, and what cannot fit in
memory or be sampled (non-finite data, data outside a likelihood's support, invalid parameters) is refused before
inference, in the spec's terms."""

import json
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from ppgen.errors import DataError, PpgenError, SpecError
from ppgen.models import bayes as bayes_module
from ppgen.models.bayes import bayes_model_from_tables
from ppgen.spec import bayes_run, data_files
from ppgen.spec.bayes import parse_bayes_spec
from ppgen.spec.expr import parse_expression
from ppgen.spec.load import MAX_NESTING, load_spec, parse_override

NORMAL_MODEL = """
[data]
y = [1.0, 2.0, 3.0]

[plates]
obs = 3

[variables]
mu = "Normal(0, 1)"
y = { dist = "Normal(mu, 1)", plate = "obs", observed = "y" }
"""


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def spec_error(path, **kwargs) -> str:
    with pytest.raises(PpgenError) as error:
        load_spec(path, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


def diamonds(levels: int) -> dict:
    """d_{i+1} = a_i + b_i with a_i = d_i + 1 and b_i = d_i * 2: every path doubles at each level."""
    variables = {"d0": {"value": "x"}}
    for i in range(levels):
        variables |= {f"a{i}": {"value": f"d{i} + 1"}, f"b{i}": {"value": f"d{i} * 2"}}
        variables[f"d{i + 1}"] = {"value": f"a{i} + b{i}"}
    variables["mu"] = "Normal(0, 1)"
    variables["y"] = {"dist": "Normal(mu, 1)", "observed": f"d{levels}"}
    return {"data": {"x": 1.0}, "variables": variables}


def chain(length: int) -> dict:
    """v0 = v1 + 1, v1 = v2 + 1, ...: written in the reverse of dependency order."""
    variables = {f"v{i}": {"value": f"v{i + 1} + 1"} for i in range(length)}
    variables[f"v{length}"] = "Normal(0, 1)"
    return {"variables": variables}


def checked_within(tables: dict, seconds: float, tmp_path):
    started = time.perf_counter()
    spec = parse_bayes_spec(tables, tmp_path, "spec.toml")
    assert time.perf_counter() - started < seconds
    return spec


# Checking is linear in the spec's size


def test_a_diamond_shaped_graph_observed_at_its_end_checks_quickly(tmp_path):
    spec = checked_within(diamonds(26), 5.0, tmp_path)  # 2^26 paths: exponential checking took minutes
    assert spec.observed == {"y": "d26"} and spec.observed_data_keys == ("x",)


def test_a_chain_of_20000_values_is_sorted_without_recursion(tmp_path):
    spec = checked_within(chain(20_000), 10.0, tmp_path)
    assert list(spec.variables)[:2] == ["v20000", "v19999"] and list(spec.variables)[-1] == "v0"


def test_ten_thousand_variables_of_every_shape_check_within_seconds(tmp_path):
    """A chain, diamonds, a wide fan-out and many likelihood terms together: quadratic work in the number of
    variables (10^8 steps here) would take far longer than the bound."""
    tables = diamonds(1000)  # 3,003 variables
    tables["variables"] |= chain(3000)["variables"]
    tables["variables"] |= {f"f{i}": {"value": "v0 + x"} for i in range(2000)}  # fan-out from one variable
    tables["data"] |= {f"z{i}": float(i) for i in range(2000)}
    tables["variables"] |= {f"z{i}": {"dist": "Normal(f0, 1)", "observed": f"z{i}"} for i in range(2000)}
    assert len(tables["variables"]) >= 10_000
    spec = checked_within(tables, 10.0, tmp_path)
    assert len(spec.observed) == 2001 and "f1999" in spec.deterministic_names


def test_a_long_chain_compiles_and_runs_its_check(tmp_path):
    model = bayes_model_from_tables(chain(2000), tmp_path, "chain.toml", backend="numpyro")
    assert model.latent_names == ["v2000"] and len(model.deterministic_names) == 2000


def test_a_dependency_cycle_through_a_long_chain_is_named(tmp_path):
    tables = chain(5000)
    tables["variables"]["v5000"] = {"value": "v0 * 2"}
    with pytest.raises(SpecError, match=r"dependency cycle v0 -> v1 -> .* -> v5000 -> v0"):
        parse_bayes_spec(tables, tmp_path, "spec.toml")


@pytest.mark.parametrize(
    "text",
    [
        "(" * 500 + "x" + ")" * 500,
        "-" * 5000 + "x",
        " + ".join(["x"] * 2000),
        "exp(" * 200 + "x" + ")" * 200,
        "x" + "[0]" * 1000,
        "x" + " ** x" * 1500,
    ],
    ids=["parentheses", "unary", "sum", "calls", "subscripts", "powers"],
)
def test_deeply_nested_expressions_are_spec_errors(text):
    with pytest.raises(SpecError, match="variables.v.value: .*(nest|longer)"):
        parse_expression(text, "variables.v.value")


# Bad files and values end in one line


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 300, 1000, 5000])
@pytest.mark.parametrize("kind", ["array", "table"])
def test_deeply_nested_toml_is_a_spec_error_in_a_spec_or_an_inference_file(tmp_path, depth, kind):
    nested = "[" * depth + "]" * depth if kind == "array" else "{a = " * depth + "1" + "}" * depth
    spec = write(tmp_path / "deep.toml", f"deep = {nested}\n{NORMAL_MODEL}")
    assert "nested more than" in spec_error(spec)
    inference = write(tmp_path / "inference.toml", f"[inference]\nmethod = 'nuts'\nextra = {nested}\n")
    message = spec_error(write(tmp_path / "model.toml", NORMAL_MODEL), inference=inference)
    assert message.startswith(f"{inference}: ") and "nested more than" in message


def test_a_deeply_nested_override_is_a_spec_error():
    with pytest.raises(SpecError, match="override data.y: .*nested"):
        parse_override("data.y=" + "[" * 200 + "]" * 200)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("data.npz", b"PK\x03\x04 not a zip archive", "not a readable .npz archive"),
        ("data.npz", b"", "not a readable .npz archive"),
        ("data.csv", b"y\n1.0\n\xff\xfe\n", "not a UTF-8 CSV file"),
        ("data.csv", b"y\n1\x002\n", "column 'y' holds a cell that is not a number"),
        ("data.json", b'{"y": [1.0, \xff]}', "not valid JSON"),
        ("data.json", b'{"y": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
        ("data.json", b'{"y": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
    ids=["npz-garbage", "npz-empty", "csv-latin1", "csv-nul", "json-latin1", "json-deep", "json-huge-int"],
)
def test_unreadable_data_files_are_data_errors(tmp_path, name, content, message):
    write(tmp_path / name, content)
    spec = write(tmp_path / "model.toml", f'[model]\ndata_file = "{name}"\n{NORMAL_MODEL}')
    with pytest.raises(DataError, match=f"data file .*{name}: {message}"):
        load_spec(spec)


@pytest.mark.parametrize("value", ["1.5", "7", '"nuts"', "[1, 2]", "true"])
def test_an_inference_table_that_is_a_value_is_a_spec_error(tmp_path, value):
    spec = write(tmp_path / "model.toml", f"inference = {value}\n{NORMAL_MODEL}")
    assert spec_error(spec).startswith(f"{spec}: inference: expected a table (got ")


def test_a_home_directory_that_does_not_exist_is_a_spec_error(tmp_path):
    message = "'~nosuchuser_ppgen/x' starts with '~nosuchuser_ppgen', but there is no such home directory"
    spec = write(tmp_path / "model.toml", '[data]\npath = "~nosuchuser_ppgen/x"\n')
    assert spec_error(spec) == f"{spec}: data.path: {message}"
    spec = write(tmp_path / "vae.toml", "[model]\nkind = 'vae'\n")
    assert (
        spec_error(spec, overrides=["data.path=~nosuchuser_ppgen/x"])
        == f"--set data.path=~nosuchuser_ppgen/x: {message}"
    )


@pytest.mark.parametrize(
    "data, size",
    [("J = 1e308", '"J"'), ("J = 1e20", '"J"'), ("J = 9223372036854775807", '"J"'), ("", "99999999999999999999999999")],
)
def test_a_plate_size_too_big_for_memory_is_a_spec_error(tmp_path, data, size):
    variables = '[variables]\nmu = { dist = "Normal(0, 1)", plate = "p" }\n'
    spec = write(tmp_path / "model.toml", f"[data]\n{data}\n[plates]\np = {size}\n{variables}")
    message = spec_error(spec)
    assert message.startswith("variables.mu: model 'model' needs ") and "more than the" in message


# Memory: estimated from the shapes before anything runs


def small_budget(monkeypatch, budget: int) -> None:
    for module in (bayes_module, data_files, bayes_run):
        monkeypatch.setattr(module, "memory_budget", lambda: budget)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_a_model_that_cannot_fit_is_refused_before_it_runs(tmp_path, monkeypatch, backend):
    small_budget(monkeypatch, 10**6)
    tables = {"plates": {"p": 100_000}, "variables": {"b1": {"dist": "Normal(0, 1)", "plate": "p"}}}
    with pytest.raises(SpecError) as error:
        bayes_model_from_tables(tables, tmp_path, "big.toml", backend=backend)
    assert str(error.value) == (
        "variables.b1: model 'big' needs about 3.2 MB of memory to run once, more than the 1 MB it may plan for"
        " (half of the memory available): b1 alone holds 100,000 numbers in plates p"
    )
    small_budget(monkeypatch, 10**7)
    assert bayes_model_from_tables(tables, tmp_path, "big.toml", backend=backend).value_sizes == {"b1": 100_000}


def test_draws_that_cannot_fit_are_refused_before_inference(tmp_path, monkeypatch):
    spec = write(tmp_path / "model.toml", NORMAL_MODEL + "[inference]\nnum_samples = 1000\nnum_chains = 2\n")
    assert load_spec(spec).model.value_sizes == {"mu": 1, "y": 3}
    small_budget(monkeypatch, 50_000)  # 2,000 draws of 7 numbers: 112 kB
    message = spec_error(spec)
    assert message.startswith(f"{spec}: 2,000 draws of model 'model' would take 112 kB of memory (7 numbers each")
    assert message.endswith("draw fewer (inference.num_samples, inference.num_chains)")


def test_an_npz_archive_that_unpacks_beyond_memory_is_refused_unread(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "data.npz", y=np.zeros(1_000_000))  # 8 MB in a few kB
    assert (tmp_path / "data.npz").stat().st_size < 100_000
    small_budget(monkeypatch, 10**6)
    spec = write(tmp_path / "model.toml", '[model]\ndata_file = "data.npz"\n[variables]\nmu = "Normal(0, 1)"\n')
    with pytest.raises(DataError, match=r"data.npz: its arrays take 8 MB unpacked, more than the 1 MB"):
        load_spec(spec)
    with zipfile.ZipFile(tmp_path / "data.npz") as archive:
        assert archive.namelist() == ["y.npy"]


def test_reading_and_checking_inline_data_stays_within_a_small_multiple_of_its_size(tmp_path):
    n = 200_000
    numbers = ", ".join(f"{v:.6f}" for v in np.random.default_rng(0).normal(size=n))
    variables = 'mu = "Normal(0, 1)"\ny = { dist = "Normal(mu, 1)", plate = "obs", observed = "y" }'
    spec = write(tmp_path / "model.toml", f"[data]\ny = [{numbers}]\n[plates]\nobs = {n}\n[variables]\n{variables}\n")
    overrides = ["inference.num_samples=10", "inference.num_chains=1"]
    load_spec(spec, overrides=overrides)  # imports and compiles once
    tracemalloc.start()
    try:
        model = load_spec(spec, overrides=overrides).model
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert model.data["y"].shape == (n,)
    assert peak < 12 * 8 * n  # the TOML text and its list of Python floats are most of it


# Values that cannot be sampled


def model_file(tmp_path, data: str, variables: str, files: dict | None = None, inference: str = ""):
    for name, content in (files or {}).items():
        write(tmp_path / name, content)
    data_file = '[model]\ndata_file = "data.csv"\n' if files else ""
    return write(
        tmp_path / "model.toml", f"{data_file}[data]\n{data}\n[plates]\nobs = 3\n[variables]\n{variables}\n{inference}"
    )


LIKELIHOOD = 'mu = "Normal(0, 1)"\ny = { dist = "Normal(mu + x, s)", plate = "obs", observed = "y" }'


@pytest.mark.parametrize(
    "data, files, message",
    [
        ("s = 1.0\nx = [0.0, nan, 0.0]\ny = [1.0, 2.0, 2.0]", None, "model.toml: data.x[1] is nan; variables.y.dist"),
        ("s = inf\nx = [0.0, 0.0, 0.0]\ny = [1.0, 2.0, 2.0]", None, "model.toml: data.s is inf; variables.y.dist"),
        ("s = 1.0\nx = [0.0, 0.0, 0.0]\ny = [1.0, 2.0, -inf]", None, "model.toml: data.y[2] is -inf; variables.y"),
        ("s = 1.0", {"data.csv": "x,y\n1,1.5\n2,2.5\nnan,3\n"}, "data.csv: column 'x', row 3 is nan; variables.y.dist"),
        ("s = 1.0", {"data.csv": "x,y\n1,1.5\n2,inf\n3,0\n"}, "data.csv: column 'y', row 2 is inf; variables.y"),
    ],
    ids=["toml-nan", "toml-inf-scale", "toml-minus-inf", "csv-nan", "csv-inf"],
)
def test_non_finite_data_is_refused_with_its_key_column_and_row(tmp_path, data, files, message):
    """NaN in data that an expression reads (a covariate, a known scale) and infinities anywhere; NaN in the data
    a likelihood observes is a missing value, which ppgen.models.missing imputes."""
    assert message in spec_error(model_file(tmp_path, data, LIKELIHOOD, files))


def test_non_finite_data_the_model_does_not_read_is_allowed(tmp_path):
    spec = model_file(tmp_path, "s = 1.0", LIKELIHOOD, {"data.csv": "unused,x,y\nnan,0,1.5\ninf,0,2.5\n3,0,0\n"})
    assert load_spec(spec).model.observed == {"y": "y"}


def test_non_finite_json_data_names_its_key_and_index(tmp_path):
    x = [[1.0, 2.0, 3.0], [4.0, float("inf"), 6.0]]
    write(tmp_path / "data.json", json.dumps({"x": x, "y": [[0.0] * 3] * 2}))
    spec = write(
        tmp_path / "model.toml",
        '[model]\ndata_file = "data.json"\n[variables]\nmu = "Normal(0, 1)"\n'
        'y = { dist = "Normal(mu + x, 1)", shape = [2, 3], observed = "y" }\n',
    )
    assert "data.json: 'x', index [1, 1] is inf; variables.y.dist reads it" in spec_error(spec)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize(
    "distribution, y, message",
    [
        ("Poisson(lam)", "[1.5, 2.0, -3.0]", "data 'y' holds 1.5 at index 0, outside the support of Poisson"),
        ("Poisson(lam)", "[1, 2, -3]", "data 'y' holds -3 at index 2, outside the support of Poisson"),
        ("Bernoulli(probs=0.5)", "[0, 1, 2]", "data 'y' holds 2 at index 2, outside the support of Bernoulli"),
        ("Exponential(lam)", "[1.0, -0.5, 2.0]", "data 'y' holds -0.5 at index 1, outside the support of Exponential"),
        ("Beta(lam, lam)", "[0.5, 1.5, 0.2]", "data 'y' holds 1.5 at index 1, outside the support of Beta"),
    ],
)
def test_observed_data_outside_the_support_is_refused_before_sampling(tmp_path, backend, distribution, y, message):
    variables = f'lam = "HalfNormal(1)"\ny = {{ dist = "{distribution}", plate = "obs", observed = "y" }}'
    spec = model_file(tmp_path, f"y = {y}", variables, inference=f'[inference]\nbackend = "{backend}"\n')
    assert spec_error(spec).startswith(f"variables.y.observed: {message} (values must be ")


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize(
    "variables, message",
    [
        ('b1 = "Normal(0, -1)"', "variables.b1.dist: Normal's scale must be > 0, got -1"),
        ('b1 = "Normal(0, s)"', "variables.b1.dist: Normal's scale must be > 0, got -2 at index 1"),
        ('b1 = "Gamma(2, s * 0)"', "variables.b1.dist: Gamma's rate must be > 0, got 0"),
        (
            'b1 = "Beta(1, 1)"\nb2 = "Bernoulli(probs=p)"',
            "variables.b2.dist: Bernoulli's probs must be in [0, 1], got 1.5",
        ),
        (
            'b1 = "Binomial(2.5, 0.5)"',
            "variables.b1.dist: Binomial's total_count must be a non-negative integer, got 2.5",
        ),
        ('b1 = "Uniform(1, 0)"', "variables.b1.dist: Uniform's low must be < high, got low = 1 and high = 0"),
    ],
)
def test_invalid_constant_parameters_are_named_in_the_spec_s_terms(tmp_path, backend, variables, message):
    spec = model_file(
        tmp_path, "s = [1.0, -2.0, 3.0]\np = 1.5", variables, inference=f'[inference]\nbackend = "{backend}"\n'
    )
    assert spec_error(spec).startswith(message)


def test_valid_data_and_parameters_are_accepted(tmp_path):
    variables = (
        'lam = "Gamma(2, s[0])"\nb = "Beta(1, 1)"\nn = { dist = "Poisson(lam)", plate = "obs", observed = "k" }\n'
        'y = { dist = "Bernoulli(probs=b)", plate = "obs", observed = "z" }'
    )
    spec = model_file(tmp_path, "s = [1.0, 2.0, 3.0]\nk = [0, 3, 7]\nz = [0, 1, 1]", variables)
    assert load_spec(spec).model.observed == {"n": "k", "y": "z"}


def test_a_parameter_of_latent_variables_is_checked_at_the_pyro_check_values(tmp_path):
    tables = {"variables": {"a": "Normal(0, 1)", "b": "Normal(0, a)"}}
    with pytest.raises(SpecError, match=r"^variables.b.dist: Normal's scale must be > 0, got -0.08\d* at the model's"):
        bayes_model_from_tables(tables, tmp_path, "model.toml", backend="pyro")


def test_a_plate_of_size_zero_is_a_spec_error(tmp_path):
    spec = write(tmp_path / "model.toml", '[plates]\np = 0\n[variables]\nmu = { dist = "Normal(0, 1)", plate = "p" }\n')
    assert spec_error(spec) == "plates.p: the size is 0; a plate needs at least one element"


# A CSV data file's rows define the plates that [plates] leaves out

CSV = "x,y\n1.0,2.0\n2.0,3.5\n3.0,5.0\n4.0,7.5\n"
REGRESSION = (
    'a = "Normal(0, 1)"\nb = "Normal(0, 1)"\ny = { dist = "Normal(a + b * x, 1)", plate = "obs", observed = "y" }\n'
)


@pytest.mark.parametrize("plates, size", [("", 4), ("[plates]\nobs = 2\n", 2), ("[plates]\ngroup = 3\n", 4)])
def test_a_csv_s_row_count_sizes_the_plates_that_are_not_declared(tmp_path, plates, size):
    write(tmp_path / "data.csv", CSV if size == 4 else "x,y\n1.0,2.0\n2.0,3.5\n")
    spec = write(tmp_path / "model.toml", f'[model]\ndata_file = "data.csv"\n{plates}[variables]\n{REGRESSION}')
    model = load_spec(spec).model
    assert model.value_sizes["y"] == size and model.observed_values["y"].shape == (size,)


def test_a_typo_of_a_declared_plate_is_still_an_error_with_a_csv(tmp_path):
    write(tmp_path / "data.csv", CSV)
    variables = REGRESSION.replace('plate = "obs"', 'plate = "osb"')
    spec = write(
        tmp_path / "model.toml", f'[model]\ndata_file = "data.csv"\n[plates]\nobs = 4\n[variables]\n{variables}'
    )
    assert spec_error(spec) == "variables.y.plate: unknown plate 'osb'; did you mean 'obs'? (declare it in [plates])"


def test_without_a_csv_an_undeclared_plate_is_an_error(tmp_path):
    write(tmp_path / "data.json", json.dumps({"x": [1.0, 2.0], "y": [2.0, 3.0]}))
    spec = write(tmp_path / "model.toml", f'[model]\ndata_file = "data.json"\n[variables]\n{REGRESSION}')
    assert spec_error(spec).startswith("variables.y.plate: unknown plate 'obs'")
