"""The examples in the package's docstrings, run as part of the suite.

Each docstring with examples is one test.  The modules are imported by name, so the
examples run against the package the suite tests (the installed one in CI), never a
second copy of the source tree.  Examples that need a PostgreSQL server are marked
``+SKIP`` in their docstring; a docstring whose every example is skipped is an
illustration, not a test, and is left out rather than reported as a skipped test.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import appendmuch


def _docstring_tests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found: list[doctest.DocTest] = []
    names = ["appendmuch"] + [
        info.name
        for info in pkgutil.walk_packages(appendmuch.__path__, "appendmuch.")
        if info.name != "appendmuch.__main__"  # runs the command line on import
    ]
    for name in names:
        module = importlib.import_module(name)
        found.extend(
            test
            for test in finder.find(module)
            if any(not example.options.get(doctest.SKIP) for example in test.examples)
        )
    return sorted(found, key=lambda test: test.name)


DOCTESTS = _docstring_tests()


def test_the_docstrings_have_examples() -> None:
    """Guard against collecting nothing (say, if the package moved)."""
    assert sum(len(test.examples) for test in DOCTESTS) >= 40
    modules = {test.name.split(".")[1] for test in DOCTESTS if "." in test.name}
    assert modules >= {"codec", "tree", "within"}


@pytest.mark.parametrize("test", DOCTESTS, ids=lambda test: test.name)
def test_docstring_examples(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(verbose=False)
    report = io.StringIO()
    result = runner.run(test, out=report.write, clear_globs=True)
    assert result.failed == 0, report.getvalue()
