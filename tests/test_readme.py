"""The README's examples run, in order, and print what the README says they print.

Every ```python block of README.md is executed in one namespace (they build on each
other, like a reader following the guide).  Lines ending in ``# <output>`` after a
``print(...)`` state the printed line; each is checked.  The CLI table is checked
against the parser so that no command goes undocumented.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from appendmuch.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_PRINT_COMMENT = re.compile(r"^\s*print\(.*\)\s+# (?P<out>.+)$")


def _blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


def _expected_lines(source: str) -> list[str]:
    """Printed lines the README states, from ``print(...)  # output`` comments."""
    expected = []
    for line in source.splitlines():
        match = _PRINT_COMMENT.match(line)
        if match:
            out = match.group("out")
            out = re.sub(r"\s+\(.*\)$", "", out)  # "(set before round 1)" is commentary
            expected.append(out)
    return expected


def test_readme_has_examples() -> None:
    assert len(_blocks()) >= 10


def test_readme_examples_print_what_they_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    printed: list[str] = []
    stated: list[str] = []
    for number, source in enumerate(_blocks()):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, f"README block {number}", "exec"), namespace)
        printed.extend(out.getvalue().splitlines())
        stated.extend(_expected_lines(source))
    assert stated, "the README states no outputs"
    # every stated output appears, in order, among the printed lines
    position = 0
    for line in stated:
        if ", then " in line:
            continue  # a loop's lines, summarised in prose
        while position < len(printed) and printed[position] != line:
            position += 1
        assert position < len(printed), f"README says {line!r} is printed; got {printed}"
        position += 1


def test_every_command_is_documented() -> None:
    text = README.read_text(encoding="utf-8")
    parser = build_parser()
    subparsers = next(
        action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction"
    )
    for command in subparsers.choices:  # type: ignore[attr-defined]
        assert f"| `{command}` |" in text, f"command {command!r} is missing from the README"
        assert f"appendmuch {command}" in text, f"no example of {command!r} in the README"
