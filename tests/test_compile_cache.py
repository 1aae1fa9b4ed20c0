"""Where JAX's persistent compilation cache goes, and when ppgen leaves it alone."""

import jax
import pytest

from ppgen.infer.compile_cache import CACHE_VARIABLE, enable_compilation_cache


@pytest.fixture
def unconfigured(monkeypatch):
    """JAX with no cache folder set; the setting in force before the test is restored after it."""
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.delenv(CACHE_VARIABLE, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_variable_names_the_folder(unconfigured, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    assert enable_compilation_cache() == str(tmp_path / "cache")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")


def test_the_default_folder_is_in_the_users_cache(unconfigured, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert enable_compilation_cache() == str(tmp_path / "ppgen" / "jax")


def test_an_empty_variable_turns_it_off(unconfigured, monkeypatch):
    monkeypatch.setenv(CACHE_VARIABLE, "")
    assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None


def test_a_folder_the_user_set_is_kept(unconfigured, monkeypatch, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "other"))
    assert enable_compilation_cache() == str(tmp_path / "mine")
