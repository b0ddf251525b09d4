"""docs/web.md documents the web view as it is: every route, every parameter, every
key of every API answer; and the README shows the screenshot it links to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from appendmuch.web import pages
from webfixtures import web_client_fixture, web_log_fixture  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "web.md"


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def documented_path(route: str) -> str:
    return route.replace("{namespace:path}", "NAMESPACE").replace("{rest:path}", "NAMESPACE/FIELD")


def test_every_route_is_documented() -> None:
    text = guide()
    for route in pages.routes():
        path = documented_path(route.path)
        if path.startswith(("/api/", "/export/")):
            assert f"`GET {path}`" in text, f"{path} is not in the API reference"
        else:
            assert f"(`{path.replace('NAMESPACE/FIELD', '')}" in text or path in text, path


def test_every_parameter_is_documented() -> None:
    text = guide()
    for allowed in (pages._TREE, pages._NAMESPACE, pages._FIELD, pages._LOG):
        for name in allowed:
            assert f"`{name}`" in text, f"parameter {name!r} is not documented"
    for name in ("format", "shape", "offset", "limit", "token", "ns", "field", "q"):
        assert f"`{name}`" in text


API_CALLS = [
    "/api/overview",
    "/api/tree",
    "/api/search?q=session",
    "/api/ns/session/s0/player/p1",
    "/api/steps/session/s0/player/p1",
    "/api/field/session/s0/player/p1/items",
    "/api/log",
]


@pytest.mark.parametrize("path", API_CALLS)
def test_every_key_of_every_answer_is_documented(web_client: Any, path: str) -> None:
    text = guide()
    answer = web_client.get(path).json()

    def keys(document: Any) -> set[str]:
        found: set[str] = set()
        if isinstance(document, dict):
            for key, value in document.items():
                if key != "value":  # values are the log's own data
                    found.add(key)
                    found |= keys(value)
        elif isinstance(document, list):
            for item in document[:3]:
                found |= keys(item)
        return found

    missing = sorted(
        key for key in keys(answer) if f'"{key}"' not in text and f"`{key}`" not in text
    )
    assert not missing, f"{path}: keys not in docs/web.md: {missing}"


def test_the_readme_shows_the_screenshot_and_links_the_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme + guide())
    assert "docs/web-namespace.png" in images
    for image in images:
        path = ROOT / image if image.startswith("docs/") else GUIDE.parent / image
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    assert "(docs/web.md)" in readme
    assert "PERFORMANCE_TABLE" not in guide() and "README_FIGURES" not in readme
