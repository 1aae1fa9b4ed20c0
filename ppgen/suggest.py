"""'Did you mean' hints for names a user mistyped: the one helper every spec error message uses."""

import difflib
from collections.abc import Iterable

__all__ = ["suggest", "PARENTHESIS", "CLAUSE"]

PARENTHESIS = " (did you mean {!r}?)"
"""The hint as an aside, as the run-spec loader writes it: ``model.latnt_dim: unknown key (did you mean ...?)``."""

CLAUSE = "; did you mean {!r}?"
"""The hint as a last clause, as the Bayesian model language writes it: ``unknown name 'm0'; did you mean ...?``."""


def suggest(word: str, choices: Iterable[str], template: str = PARENTHESIS) -> str:
    """The hint for the closest of ``choices`` to ``word`` (``difflib``'s similarity, at least 0.6), or "".

    Args:
        word: the name as the user wrote it.
        choices: the names allowed there (a dict gives its keys); their order does not matter.
        template: the hint, with ``{!r}`` for the closest choice (``PARENTHESIS`` or ``CLAUSE``).
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return template.format(close[0]) if close else ""
