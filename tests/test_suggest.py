"""The one 'did you mean' helper of every spec error message."""

import pytest

from ppgen.suggest import CLAUSE, PARENTHESIS, suggest


@pytest.mark.parametrize(
    ("template", "expected"), [(PARENTHESIS, " (did you mean 'latent_dim'?)"), (CLAUSE, "; did you mean 'latent_dim'?")]
)
def test_the_closest_choice_is_suggested_in_the_template(template, expected):
    assert suggest("latnt_dim", ["hidden", "latent_dim", "lr"], template) == expected


def test_the_parenthesis_is_the_default():
    assert suggest("modle", {"model": 1, "data": 2}) == " (did you mean 'model'?)"


def test_nothing_close_suggests_nothing():
    assert suggest("zzz", ["model", "data"]) == ""
    assert suggest("model", []) == ""


def test_the_order_of_the_choices_does_not_matter():
    """Ties in similarity are broken by the names themselves, not by their order."""
    choices = ["ab", "ac", "ad"]
    assert suggest("a", choices) == suggest("a", choices[::-1]) == suggest("a", set(choices))
