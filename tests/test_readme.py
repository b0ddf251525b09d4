"""The user guide's examples run, in order, and print what the guide says they print.

Every ```python block of README.md is executed in one namespace (they build on each
other, like a reader following the guide).  Each reference page under docs/ with
examples continues the README: its blocks run after the README's, in the same
namespace.  Lines ending in ``# <output>`` after a ``print(...)`` state the printed
line; each is checked.  The command table of docs/cli.md is checked against the
parser so that no command goes undocumented, and every relative link of the guide
must lead to an existing file and heading.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from appendmuch.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
COMMAND_REFERENCE = ROOT / "docs" / "cli.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_PRINT_COMMENT = re.compile(r"^\s*print\(.*\)\s+# (?P<out>.+)$")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def _expected_lines(source: str) -> list[str]:
    """Printed lines the guide states, from ``print(...)  # output`` comments."""
    expected = []
    for line in source.splitlines():
        match = _PRINT_COMMENT.match(line)
        if match:
            out = match.group("out")
            out = re.sub(r"\s+\(.*\)$", "", out)  # "(set before round 1)" is commentary
            expected.append(out)
    return expected


def _run(page: Path, namespace: dict[str, object]) -> tuple[list[str], list[str]]:
    """Execute every block of `page` in `namespace`: (lines printed, lines stated)."""
    printed: list[str] = []
    stated: list[str] = []
    for number, source in enumerate(_blocks(page)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, f"{page.name} block {number}", "exec"), namespace)
        printed.extend(out.getvalue().splitlines())
        stated.extend(_expected_lines(source))
    return printed, stated


def _assert_printed_in_order(page: Path, stated: list[str], printed: list[str]) -> None:
    """Every stated output appears, in order, among the printed lines."""
    assert stated, f"{page.name} states no outputs"
    position = 0
    for line in stated:
        if ", then " in line:
            continue  # a loop's lines, summarised in prose
        while position < len(printed) and printed[position] != line:
            position += 1
        assert position < len(printed), f"{page.name} says {line!r} is printed; got {printed}"
        position += 1


def test_readme_has_examples() -> None:
    assert len(_blocks(README)) >= 10


def test_readme_examples_print_what_they_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    printed, stated = _run(README, {"__name__": "__main__"})
    _assert_printed_in_order(README, stated, printed)


PAGES_WITH_EXAMPLES = [page for page in DOCS if _blocks(page)]


def test_reference_pages_have_examples() -> None:
    assert {page.name for page in PAGES_WITH_EXAMPLES} >= {"backends.md", "cli.md", "processes.md"}


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda page: page.name)
def test_page_examples_print_what_they_say(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    _run(README, namespace)  # the pages' examples continue the README's
    printed, stated = _run(page, namespace)
    _assert_printed_in_order(page, stated, printed)


def test_every_command_is_documented() -> None:
    text = COMMAND_REFERENCE.read_text(encoding="utf-8")
    parser = build_parser()
    subparsers = next(
        action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction"
    )
    for command in subparsers.choices:  # type: ignore[attr-defined]
        assert f"| `{command}` |" in text, f"command {command!r} is missing from docs/cli.md"
        assert f"appendmuch {command}" in text, f"no example of {command!r} in docs/cli.md"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of `page`: lower case, punctuation dropped,
    spaces made hyphens, a repeated one numbered -1, -2, ..."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", _FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        numbered, count = anchor, 0
        while numbered in anchors:
            count += 1
            numbered = f"{anchor}-{count}"
        anchors.add(numbered)
    return anchors


def test_anchors_follow_github() -> None:
    assert {"writing-reading-deleting", "the-appendmuch-command"} <= (
        _anchors(README) | _anchors(COMMAND_REFERENCE)
    )


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_every_relative_link_resolves(page: Path) -> None:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto: ...
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.is_file():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: {broken}"
