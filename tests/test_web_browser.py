"""The web view in a real browser: the system's headless Chromium, driven by selenium,
on a server started as ``python -m appendmuch serve`` over real SQLite files and the
session's PostgreSQL server, with writers in other processes for the live tests.

A screenshot of each page is saved in the test run's temporary directory
(``.../web-screenshots*/``, printed at the end of the module).
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3
from appendmuch.dumpfile import pack_rows
from backends import SqlBackend, sql_place
from webfixtures import (  # noqa: F401 (fixtures)
    HOSTILE,
    PATIENCE,
    browser_fixture,
    poll,
    rows_of,
    serve,
    servers_fixture,
    web_log_fixture,
    writers,
)

#: the issue's bound for a write to show on an open page
LIVE_WITHIN = 2.0


@pytest.fixture(name="screenshots", scope="module")
def screenshots_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where this module's screenshots go (in pytest's temporary directory)."""
    directory = tmp_path_factory.mktemp("web-screenshots")
    yield directory
    print(f"\nweb view screenshots: {directory}")


def shot(browser: Any, screenshots: Path, name: str) -> Path:
    path = screenshots / f"{name}.png"
    assert browser.save_screenshot(str(path)), name
    assert path.stat().st_size > 1000
    return path


def css(browser: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def all_css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, selector))


def text_of(browser: Any, selector: str) -> str | None:
    """The element's text now, or None when it is not there (yet)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(css(browser, selector).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def attr_of(browser: Any, selector: str, name: str) -> str | None:
    """An attribute of the element now, or None when it is not there (yet)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        value = css(browser, selector).get_attribute(name)
    except (NoSuchElementException, StaleElementReferenceException):
        return None
    return None if value is None else str(value)


def at(browser: Any) -> str | None:
    """The seq the namespace page shows."""
    return attr_of(browser, "#state-data", "data-at")


def cell(browser: Any, field: str) -> str | None:
    """The value shown for ``field`` on a namespace page."""
    return text_of(browser, f'#state tr[data-field="{field}"] td:nth-child(2)')


def live_on(browser: Any) -> None:
    poll(lambda: attr_of(browser, "#live", "data-state") == "on")


@pytest.fixture(autouse=True)
def _fresh_browser(browser: Any) -> Iterator[None]:
    yield
    browser.delete_all_cookies()


# --------------------------------------------------------------------------- pages


def test_overview(browser: Any, servers: Any, web_log: Path, screenshots: Path) -> None:
    server = servers(web_log)
    browser.get(server.url)
    assert browser.title == "Overview · appendmuch"
    assert text_of(browser, "#rows") == f"{len(rows_of(web_log)):,}"
    assert text_of(browser, "#writer") == "none"
    assert len(all_css(browser, "svg.chart rect.bar")) == 60
    first = all_css(browser, "table.grid tbody tr")[0]
    assert first.text.startswith("lab/series 300")
    live_on(browser)
    shot(browser, screenshots, "overview")


def test_navigate_the_tree_to_a_namespace(
    browser: Any, servers: Any, web_log: Path, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By

    server = servers(web_log)
    browser.get(server.base + "/tree")
    shot(browser, screenshots, "tree")
    for label in ("session/", "s1/", "player/"):
        browser.find_element(By.LINK_TEXT, label).click()
        poll(lambda label=label: browser.current_url.endswith(label.rstrip("/")))
    assert text_of(browser, "h1") == "Below session/s1/player"
    rows = all_css(browser, "table.tree tbody tr")
    assert [row.text.split()[0] for row in rows] == ["p0", "p1", "p2", "p3"]
    browser.find_element(By.LINK_TEXT, "p2").click()
    poll(lambda: text_of(browser, "h1.ns") == "session/s1/player/p2")
    assert [row.get_attribute("data-field") for row in all_css(browser, "#state tbody tr")] == [
        "round",
        "score",
        "items",
        "profile",
    ]
    assert cell(browser, "score") == "22"
    assert cell(browser, "items") == '["start","item1","item2"]'
    # the search box finds namespaces by a field's name
    css(browser, 'header input[name="field"]').send_keys("prof")
    css(browser, "header form.search button").click()
    poll(lambda: text_of(browser, "h1") == "Search")
    assert "8 namespaces found" in (text_of(browser, "p.count") or "")
    shot(browser, screenshots, "search")


def test_scrub_through_a_namespace(
    browser: Any, servers: Any, web_log: Path, screenshots: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    dbns = "session/s1/player/p2"
    changes = [row for row in rows_of(web_log) if row[1] == dbns]
    start = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC).timestamp()
    timed = [
        (
            len(rows_of(web_log)) + 1 + i,
            "timed",
            "minute",
            b"\x00" + str(i).encode(),
            start + 60 * i,
            "t:1",
        )
        for i in range(5)
    ]
    driver = Sqlite3(web_log)
    driver.restore(io.BytesIO(b"".join(pack_rows(timed))))
    driver.close()
    server = servers(web_log)
    browser.get(server.base + "/ns/" + dbns)
    slider = css(browser, "#step")
    assert slider.get_attribute("max") == str(len(changes) - 1)
    slider.send_keys(Keys.HOME)
    for _ in range(5):
        slider.send_keys(Keys.ARROW_RIGHT)
    target = changes[5]  # round 1's score
    poll(lambda: at(browser) == str(target[0]))
    assert cell(browser, "score") == "12" and cell(browser, "round") == "1"
    assert cell(browser, "items") == '["start"]'  # round 1's item is appended after
    assert browser.current_url.endswith(f"/ns/{dbns}?at={target[0]}")
    changed = all_css(browser, "#state tr.changed")
    assert [row.get_attribute("data-field") for row in changed] == ["score"]
    assert text_of(browser, "#where") is not None
    assert f"change 6 of {len(changes)}" in str(text_of(browser, "#where"))
    shot(browser, screenshots, "namespace-scrubbed")
    # one step back with the link, then the page reloaded from its address
    css(browser, "#prev").click()
    poll(lambda: at(browser) == str(changes[4][0]))
    assert cell(browser, "score") == "2"
    browser.get(browser.current_url)
    assert cell(browser, "round") == "1" and cell(browser, "score") == "2"
    # a moment typed as a time: the state at the last change at or before it (the
    # namespace "timed" was written a minute apart: see the start of the test)
    browser.get(server.base + "/ns/timed")
    browser.execute_script(
        "const box = document.getElementById('time');"
        "box.value = arguments[0]; box.dispatchEvent(new Event('change'));",
        "2024-05-01T10:02:30.000",
    )
    poll(lambda: at(browser) == str(timed[2][0]))
    assert cell(browser, "minute") == "2"
    assert "change 3 of 5" in str(text_of(browser, "#where"))
    assert str(css(browser, "#time").get_attribute("value")).startswith("2024-05-01T10:02")


def test_play_steps_through_every_change(browser: Any, servers: Any, web_log: Path) -> None:
    dbns = "session/s0/player/p3"
    changes = [row[0] for row in rows_of(web_log) if row[1] == dbns]
    server = servers(web_log)
    browser.get(f"{server.base}/ns/{dbns}?at={changes[-4]}")
    seen: set[str] = set()
    css(browser, "#play").click()

    def finished() -> bool:
        seen.add(str(at(browser)))
        return text_of(browser, "#play") == "▶" and browser.current_url.endswith(
            f"at={changes[-1]}"
        )

    poll(finished, timeout=PATIENCE)
    assert {str(seq) for seq in changes[-3:]} <= seen | {str(changes[-1])}
    assert css(browser, "#step").get_attribute("value") == str(len(changes) - 1)


def test_field_history_with_chart_and_diffs(
    browser: Any, servers: Any, web_log: Path, screenshots: Path
) -> None:
    server = servers(web_log)
    browser.get(server.base + "/field/lab/series/x")
    chart = css(browser, "figure.chart svg")
    assert chart.get_attribute("aria-label").startswith("x of lab/series: 300 numeric versions")
    assert len(all_css(browser, "figure.chart polyline")) == 1
    assert len(all_css(browser, "#versions tbody tr")) == 300
    shot(browser, screenshots, "field")
    browser.get(server.base + "/field/session/s0/player/p1/items")
    changes = [li.text for li in all_css(browser, "ul.diff li")]
    assert changes == ['+ [1] "item1"', '+ [2] "item2"']
    browser.get(server.base + "/field/session/s1/player/p3/score")
    last = all_css(browser, "#versions tbody tr")[-1]
    assert "gone" in str(last.get_attribute("class"))
    assert last.find_elements("css selector", "td")[3].text == "deleted"


def test_log_filters_and_jump(browser: Any, servers: Any, web_log: Path, screenshots: Path) -> None:
    server = servers(web_log)
    browser.get(server.base + "/log")
    css(browser, 'form.filters input[name="ns"]').send_keys("session/s0")
    css(browser, 'form.filters input[name="field"]').send_keys("score")
    css(browser, "form.filters button").click()
    poll(lambda: "ns=session%2Fs0" in browser.current_url)
    rows = all_css(browser, "#rows tr")
    assert len(rows) == 12
    assert {row.find_elements("css selector", "td")[3].text for row in rows} == {"score"}
    shot(browser, screenshots, "log")
    scores = [
        row[0] for row in rows_of(web_log) if row[1].startswith("session/s0/") and row[2] == "score"
    ]
    css(browser, 'form.jump input[name="seq"]').send_keys(str(scores[1]))
    css(browser, "form.jump button").click()  # (the filters stay)
    poll(lambda: f"seq={scores[1]}" in browser.current_url)
    rows = all_css(browser, "#rows tr")
    assert [row.get_attribute("data-seq") for row in rows] == [str(seq) for seq in scores[1:]]
    highlighted = all_css(browser, "#rows tr.hl")
    assert [row.get_attribute("data-seq") for row in highlighted] == [str(scores[1])]


def test_bad_address_shows_a_clear_page(browser: Any, servers: Any, web_log: Path) -> None:
    server = servers(web_log)
    browser.get(server.base + "/ns/session/s0/player/p0?at=999999")
    assert text_of(browser, "h1") == "404 Not found"
    assert "past the end of the log" in str(text_of(browser, "#error-message"))


# --------------------------------------------------------------------------- safety


def test_hostile_strings_render_as_text(browser: Any, servers: Any, web_log: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    driver = Sqlite3(web_log)
    last = max(row[0] for row in driver.load_rows())
    hostile_context = (last + 1, "lab/hostile", "ctx", b"\x001", 1700000000.0, HOSTILE["img"])
    driver.restore(io.BytesIO(b"".join(pack_rows([hostile_context]))))
    driver.close()
    server = servers(web_log)
    for path in ("/ns/lab/hostile", "/log?ns=lab/hostile", "/field/lab/hostile/nested"):
        browser.get(server.base + path)
        assert all_css(browser, "img") == [], path
        assert all_css(browser, 'a[href^="javascript:"]') == [], path
        assert len(all_css(browser, "script")) == 1, path
        assert browser.execute_script("return window.__pwned === undefined"), path
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text
    browser.get(server.base + "/ns/lab/hostile")
    for name, text in HOSTILE.items():
        assert cell(browser, name) == '"' + text.replace('"', '\\"') + '"', name
    contexts = [element.text for element in all_css(browser, "#state code.ctx")]
    assert HOSTILE["img"] in contexts
    browser.get(server.base + "/log?context=%3Cimg")
    assert [element.text for element in all_css(browser, "#rows code.ctx")] == [HOSTILE["img"]]


def test_a_token_protected_server(browser: Any, servers: Any, web_log: Path) -> None:
    token = "browser-token-0123456789abcdef"
    server = servers(web_log, "--token", token)
    browser.get(server.base + "/log")
    assert "served with a token" in browser.page_source
    assert all_css(browser, "#rows") == []
    browser.get(server.url)  # the address the command printed
    poll(lambda: text_of(browser, "h1") == "Overview")
    assert "token" not in browser.current_url
    live_on(browser)  # the event stream is let in too (the cookie)
    browser.get(server.base + "/log")
    assert len(all_css(browser, "#rows tr")) == 100


# --------------------------------------------------------------------------- live


def shows_within(check: Any, limit: float = LIVE_WITHIN) -> float:
    """Seconds until ``check()`` holds; fails past ``limit``."""
    started = time.monotonic()
    poll(check, timeout=limit, every=0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("mode", ["single", "shared"])
def test_writes_of_other_processes_show_on_open_pages(
    browser: Any, servers: Any, place: SqlBackend, tmp_path: Path, mode: str, screenshots: Path
) -> None:
    count = 1 if mode == "single" else 2
    with writers(place, tmp_path, count, shared=mode == "shared", app="web") as peers:
        for peer in peers:
            peer("set", ns=["study", "p1"], field="answer", value="first")
            peer("flush")
        server = serve(place, servers)
        # the namespace page, following the latest state
        browser.get(server.base + "/ns/study/p1")
        live_on(browser)
        for i, peer in enumerate(peers):
            peer("set", ns=["study", "p1"], field="answer", value=f"from writer {i}")
            peer("flush")
            shows_within(lambda i=i: cell(browser, "answer") == f'"from writer {i}"')
        assert css(browser, "#step").get_attribute("max") == str(2 * count - 1)
        # the log page at its end: the new entry is added below
        browser.get(server.base + "/log")
        live_on(browser)
        peers[-1]("set", ns=["study", "p2"], field="answer", value="new row")
        peers[-1]("flush")
        shows_within(lambda: text_of(browser, "#rows tr:last-child td:nth-child(5)") == '"new row"')
        shot(browser, screenshots, f"log-live-{place.kind}-{mode}")
        # the overview's counts
        browser.get(server.base + "/")
        live_on(browser)
        before = int(str(text_of(browser, "#rows")).replace(",", ""))
        peers[0]("set", ns=["study", "p3"], field="answer", value=1)
        peers[0]("flush")
        shows_within(lambda: text_of(browser, "#rows") == f"{before + 1:,}")
        writer = text_of(browser, "#writer")
        assert writer == ("a single writer" if mode == "single" else f"{count} shared writers")
        # a field page showing its newest versions
        browser.get(server.base + "/field/study/p1/answer")
        live_on(browser)
        peers[0]("set", ns=["study", "p1"], field="answer", value=42)
        peers[0]("flush")
        last_value = "#versions tbody tr:last-child td:nth-child(4)"
        shows_within(lambda: text_of(browser, last_value) == "42")
        assert len(all_css(browser, "#versions tbody tr")) == 2 * count + 1


def test_a_page_scrubbed_to_the_past_stays_there(
    browser: Any, servers: Any, tmp_path: Path
) -> None:
    place = sql_place("sqlite", tmp_path)
    with writers(place, tmp_path, 1, shared=False, app="web-past") as (peer,):
        for value in ("one", "two", "three"):
            peer("set", ns=["study", "p1"], field="answer", value=value)
        peer("flush")
        server = serve(place, servers)
        first = next(row[0] for row in place.rows())
        browser.get(f"{server.base}/ns/study/p1?at={first}")
        live_on(browser)
        assert cell(browser, "answer") == '"one"'
        peer("set", ns=["study", "p1"], field="answer", value="four")
        peer("flush")
        shows_within(lambda: attr_of(browser, "#newer", "hidden") is None)
        assert "now 4 changes" in str(text_of(browser, "#newer"))
        assert cell(browser, "answer") == '"one"'  # still the past
        assert browser.current_url.endswith(f"?at={first}")
        assert css(browser, "#step").get_attribute("max") == "3"
        css(browser, "#newer a").click()  # "show the latest"
        poll(lambda: cell(browser, "answer") == '"four"')
