"""The web view's JSON API (and the pages built from the same models), through
Starlette's TestClient on real SQLite files; each answer is checked against what the
log holds, read independently (raw rows, ``appendmuch.inspection``, the export module)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from appendmuch import Store
from appendmuch.export import write_export
from appendmuch.inspection import Target, log_info, namespace_state, open_log
from appendmuch.rendering import iso_time, stored_json
from webfixtures import rows_of, web_client_fixture, web_log_fixture  # noqa: F401 (fixtures)


def value_json(raw: bytes | None) -> Any:
    return None if raw is None else orjson.loads(stored_json(raw))


def get_json(client: Any, url: str, status: int = 200) -> Any:
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def walk(
    client: Any, first: str, following: str, link: str = "newer"
) -> tuple[list[int], list[Any]]:
    """Page from ``first`` along the ``link`` ("newer" or "older") of each answer
    (``following`` formatted with it): every seq seen, in log order, and the pages."""
    seqs: list[int] = []
    pages = [get_json(client, first)]
    while True:
        page = pages[-1]
        found = [item["seq"] for item in page.get("entries", page.get("versions"))]
        seqs = seqs + found if link == "newer" else found + seqs
        if page[link] is None:
            return seqs, pages
        pages.append(get_json(client, following.format(page[link])))


# --------------------------------------------------------------------------- overview, tree


def test_overview_counts_match_appendmuch_info(web_client: Any, web_log: Path) -> None:
    target = Target(str(web_log))
    driver = open_log(target)
    try:
        info = log_info(driver, target)
    finally:
        driver.close()
    got = get_json(web_client, "/api/overview")
    assert (got["backend"], got["table"], got["live"]) == ("sqlite", "appendmuch_values", True)
    assert got["rows"] == info.rows
    assert (got["first_seq"], got["last_seq"]) == (info.first_seq, info.last_seq)
    assert (got["first_time"], got["last_time"]) == (
        iso_time(info.first_time),
        iso_time(info.last_time),
    )
    assert got["namespaces"] == info.namespaces
    assert got["fields"] == info.fields
    assert got["deleted_fields"] == info.deleted_fields == 1
    assert got["tombstones"] == info.tombstones
    assert got["writer"] == {"mode": "none", "writers": 0}
    assert got["busiest"][0] == {"namespace": "lab/series", "rows": 300}
    assert round(sum(bucket["rows"] for bucket in got["writes_over_time"])) == info.rows


def test_tree_levels_with_counts(web_client: Any, web_log: Path) -> None:
    rows = rows_of(web_log)
    top = get_json(web_client, "/api/tree")
    assert [child["token"] for child in top["children"]] == ["lab", "session"]
    assert top["entries"] == len(rows)
    players = get_json(web_client, "/api/tree?prefix=session/s1/player")
    assert [child["namespace"] for child in players["children"]] == [
        f"session/s1/player/p{p}" for p in range(4)
    ]
    for child in players["children"]:
        own = [row for row in rows if row[1] == child["namespace"]]
        assert child["entries"] == len(own)
        assert child["fields"] == 4
        assert child["last_seq"] == own[-1][0]
        assert child["has_children"] is False
    page = get_json(web_client, "/api/tree?prefix=session/s1/player&offset=1&limit=2")
    assert [child["token"] for child in page["children"]] == ["p1", "p2"]
    assert page["total"] == 4


def test_search_by_namespace_and_field(web_client: Any) -> None:
    found = get_json(web_client, "/api/search?q=session/s1/player/p")
    assert [r["namespace"] for r in found["results"]] == [
        f"session/s1/player/p{p}" for p in range(4)
    ]
    by_field = get_json(web_client, "/api/search?field=sco")
    assert by_field["total"] == 8
    assert {tuple(r["fields"]) for r in by_field["results"]} == {("score",)}
    both = get_json(web_client, "/api/search?q=lab&field=")
    assert [r["namespace"] for r in both["results"]] == ["lab/hostile", "lab/series"]
    assert get_json(web_client, "/api/search?q=nothing-like-this")["total"] == 0


# --------------------------------------------------------------------------- namespace


def test_namespace_latest_matches_appendmuch_show(web_client: Any, web_log: Path) -> None:
    driver = open_log(Target(str(web_log)))
    try:
        expected = namespace_state(driver, "session/s1/player/p3")
    finally:
        driver.close()
    got = get_json(web_client, "/api/ns/session/s1/player/p3")
    assert got["latest"] is True
    current = {f["field"]: f for f in got["fields"] if not f["unavailable"]}
    assert list(current) == [state.field for state in expected.fields]
    for state in expected.fields:
        assert current[state.field]["seq"] == state.seq
        assert current[state.field]["context"] == state.context
    assert [f["field"] for f in got["fields"] if f["unavailable"]] == expected.deleted


def state_at(rows: list[tuple[Any, ...]], dbns: str, seq: int) -> dict[str, tuple[int, Any]]:
    """Each field of ``dbns`` as of ``seq``, from the raw rows: (seq, JSON value)."""
    state: dict[str, tuple[int, Any]] = {}
    for row in rows:
        if row[1] == dbns and row[0] <= seq:
            state[row[2]] = (row[0], value_json(row[3]))
    return state


def test_namespace_as_of_every_step_matches_the_rows(web_client: Any, web_log: Path) -> None:
    rows = rows_of(web_log)
    dbns = "session/s1/player/p3"
    changes = [row[0] for row in rows if row[1] == dbns]
    for step, seq in enumerate(changes):
        got = get_json(web_client, f"/api/ns/{dbns}?step={step}")
        assert (got["at"], got["step"], got["steps"]) == (seq, step, len(changes))
        assert got["prev_seq"] == (changes[step - 1] if step else None)
        assert got["next_seq"] == (changes[step + 1] if step + 1 < len(changes) else None)
        shown = {f["field"]: (f["seq"], f["value"]) for f in got["fields"]}
        assert shown == state_at(rows, dbns, seq)
        assert [f["field"] for f in got["fields"] if f["changed"]] == [
            row[2] for row in rows if row[0] == seq
        ]
        assert got == get_json(web_client, f"/api/ns/{dbns}?at={seq}") | {"latest": False}
    # a seq where another namespace changed shows the state of the change before it
    others = [row[0] for row in rows if row[1] == "session/s0/player/p0"]
    got = get_json(web_client, f"/api/ns/session/s0/player/p0?at={others[-1] + 1}")
    assert got["at"] == others[-1] and got["step"] == len(others) - 1
    # before the first change: nothing yet
    early = get_json(web_client, f"/api/ns/{dbns}?at={changes[0] - 1}")
    assert (early["at"], early["step"], early["fields"]) == (None, -1, [])
    assert early["later"] == ["round", "score", "items", "profile"]


def test_namespace_as_of_a_time(web_client: Any, web_log: Path) -> None:
    rows = rows_of(web_log)
    dbns = "session/s0/player/p1"
    own = [row for row in rows if row[1] == dbns]
    for row in own[::3]:
        # ISO text keeps microseconds: entries later within the microsecond are after it
        moment = dt.datetime.fromtimestamp(row[4], tz=dt.UTC).isoformat()
        got = get_json(web_client, f"/api/ns/{dbns}?time={moment.replace('+', '%2B')}")
        limit = dt.datetime.fromisoformat(moment).timestamp()
        assert got["at"] == max((r[0] for r in own if r[4] <= limit), default=None)
        by_number = get_json(web_client, f"/api/ns/{dbns}?time={row[4]!r}")
        assert by_number["at"] == max(r[0] for r in own if r[4] <= row[4])
    before = get_json(web_client, f"/api/ns/{dbns}?time=2000-01-01T00:00:00")
    assert before["at"] is None and before["fields"] == []


def test_steps_list_every_change(web_client: Any, web_log: Path) -> None:
    rows = rows_of(web_log)
    changes = [row[0] for row in rows if row[1] == "lab/series"]
    got = get_json(web_client, "/api/steps/lab/series?limit=1000")
    assert got["steps"] == 300 and got["seqs"] == changes
    page = get_json(web_client, "/api/steps/lab/series?offset=295&limit=10")
    assert page["seqs"] == changes[295:]
    assert get_json(web_client, "/api/steps/session?limit=5")["seqs"] == []  # no fields of its own


# --------------------------------------------------------------------------- field


def test_field_versions_diffs_and_paging(web_client: Any, web_log: Path) -> None:
    rows = rows_of(web_log)
    dbns = "session/s0/player/p1"
    items = get_json(web_client, f"/api/field/{dbns}/items")
    assert [v["value"] for v in items["versions"]] == [
        ["start"],
        ["start", "item1"],
        ["start", "item1", "item2"],
    ]
    assert "changes" not in items["versions"][0]
    assert items["versions"][2]["changes"] == [
        {"op": "+", "at": "[2]", "old": None, "new": '"item2"'}
    ]
    profile = get_json(web_client, f"/api/field/{dbns}/profile")
    assert profile["versions"][1]["changes"] == [{"op": "~", "at": "level", "old": "0", "new": "1"}]
    gone = get_json(web_client, "/api/field/session/s1/player/p3/score")
    assert gone["versions"][-1]["unavailable"] is True and gone["versions"][-1]["value"] is None
    # paging through 300 versions, both ways, sees each exactly once
    expected = [row[0] for row in rows if row[1] == "lab/series"]
    field = "/api/field/lab/series/x"
    seen, pages = walk(web_client, f"{field}?after=1&limit=70", field + "?after={}&limit=70")
    assert seen == expected and pages[-1]["tail"] is True
    back, pages = walk(web_client, f"{field}?limit=70", field + "?before={}&limit=70", "older")
    assert back == expected
    assert [v["version"] for v in pages[-1]["versions"]] == list(range(1, 21))  # 300 = 20 + 4 x 70


def test_field_page_draws_numbers_only(web_client: Any) -> None:
    numbers = web_client.get("/field/lab/series/x")
    assert numbers.status_code == 200
    assert numbers.text.count("<svg") == 1 and "<polyline" in numbers.text
    assert "300 numeric versions" in numbers.text
    lists = web_client.get("/field/session/s0/player/p1/items")
    assert lists.status_code == 200 and "<svg" not in lists.text


# --------------------------------------------------------------------------- log


FILTERS: list[tuple[str, Any]] = [
    ("", lambda row: True),
    ("ns=session/s1", lambda row: row[1].startswith("session/s1/")),
    ("field=score", lambda row: row[2] == "score"),
    ("ns=session&field=items", lambda row: row[1].startswith("session/") and row[2] == "items"),
    ("ns=lab&context=write_demo", lambda row: row[1].startswith("lab/")),
]


@pytest.mark.parametrize(("query", "keep"), FILTERS, ids=[q or "all" for q, _ in FILTERS])
def test_log_pages_cover_the_selection_once(
    web_client: Any, web_log: Path, query: str, keep: Any
) -> None:
    expected = [row[0] for row in rows_of(web_log) if keep(row)]
    log = f"/api/log?{query}"
    seen, pages = walk(web_client, f"{log}&after=0&limit=37", log + "&after={}&limit=37")
    assert seen == expected and pages[-1]["tail"] is True
    back, pages = walk(web_client, f"{log}&limit=37", log + "&before={}&limit=37", "older")
    assert pages[0]["tail"] is True
    assert back == expected


def test_log_time_range_and_jump(web_client: Any, web_log: Path) -> None:
    rows = rows_of(web_log)
    moment = dt.datetime.fromtimestamp(rows[40][4], tz=dt.UTC).isoformat()
    low, high = dt.datetime.fromisoformat(moment).timestamp(), rows[90][4]
    start = moment.replace("+", "%2B")
    got = get_json(web_client, f"/api/log?from={start}&to={high!r}&after=0&limit=1000")
    assert [e["seq"] for e in got["entries"]] == [r[0] for r in rows if low <= r[4] <= high]
    assert got["filters"]["from"] == iso_time(low)
    jumped = get_json(web_client, "/api/log?seq=100&limit=5")
    assert [e["seq"] for e in jumped["entries"]] == [100, 101, 102, 103, 104]
    entry = jumped["entries"][0]
    row = rows[99]
    assert (entry["namespace"], entry["field"], entry["value"]) == (
        row[1],
        row[2],
        value_json(row[3]),
    )
    assert entry["time"] == iso_time(row[4]) and entry["context"] == row[5]


def test_log_page_marks_the_jumped_to_entry(web_client: Any) -> None:
    page = web_client.get("/log?seq=100&limit=5")
    assert page.status_code == 200
    assert 'id="seq-100" data-seq="100" class="hl' in page.text


# --------------------------------------------------------------------------- exports


def export_of(path: Path, **kwargs: Any) -> str:
    driver = open_log(Target(str(path)))
    out = io.StringIO(newline="")
    try:
        write_export(driver, out, **kwargs)
    finally:
        driver.close()
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_exports_are_the_export_modules_files(web_client: Any, web_log: Path, fmt: str) -> None:
    whole = web_client.get(f"/export/log?format={fmt}")
    assert whole.status_code == 200
    assert "attachment" in whole.headers["content-disposition"]
    assert whole.text == export_of(web_log, format=fmt)
    below = web_client.get(f"/export/log?format={fmt}&ns=session/s1")
    assert below.text == export_of(web_log, format=fmt, namespace="session/s1")
    latest = web_client.get(f"/export/ns/session/s1/player/p2?format={fmt}")
    assert latest.text == export_of(
        web_log, format=fmt, shape="latest", namespace="session/s1/player/p2"
    )
    history = web_client.get(f"/export/ns/lab/hostile?format={fmt}&shape=log")
    assert history.text == export_of(web_log, format=fmt, namespace="lab/hostile")


def test_export_of_a_past_state_and_of_a_field(web_client: Any, web_log: Path) -> None:
    rows = rows_of(web_log)
    dbns = "session/s0/player/p0"
    seq = [row[0] for row in rows if row[1] == dbns][5]
    past = web_client.get(f"/export/ns/{dbns}?format=jsonl&at={seq}")
    line = orjson.loads(past.text)
    assert line == {"namespace": dbns} | {k: v for k, (_s, v) in state_at(rows, dbns, seq).items()}
    upto = web_client.get(f"/export/ns/{dbns}?format=jsonl&shape=log&at={seq}")
    assert [orjson.loads(x)["seq"] for x in upto.text.splitlines()] == [
        row[0] for row in rows if row[1] == dbns and row[0] <= seq
    ]
    field = web_client.get("/export/field/lab/series/x?format=csv")
    lines = field.text.splitlines()
    assert lines[0] == "seq,time,namespace,field,value,unavailable,context"
    assert len(lines) == 301


# --------------------------------------------------------------------------- bad input

BAD: list[tuple[str, int, str]] = [
    ("/ns/no/such/namespace", 404, "there is no namespace 'no/such/namespace'"),
    ("/ns/bad%20name", 400, "is not a namespace"),
    ("/ns/session/s0/player/p0?at=999999", 404, "past the end of the log"),
    ("/ns/session/s0/player/p0?step=12", 404, "step 12 is out of range"),
    ("/ns/session/s0/player/p0?at=x", 400, "at='x': expected a seq"),
    ("/ns/session/s0/player/p0?at=-1", 400, "expected a seq"),
    ("/ns/session/s0/player/p0?at=1.5", 400, "expected a seq"),
    ("/ns/session/s0/player/p0?at=99999999999999999999999", 400, "expected a seq"),
    ("/ns/session/s0/player/p0?at=3&step=1", 400, "give one of at, step and time"),
    ("/ns/session/s0/player/p0?time=yesterday", 400, "expected a time"),
    ("/ns/session/s0/player/p0?colour=red", 400, "unknown parameter 'colour'"),
    ("/ns/session/s0/player/p0?partial=bogus", 400, "partial='bogus'"),
    ("/field/session/s0/player/p0/nothing", 404, "has no field 'nothing'"),
    ("/field/session/s0/player/p0/1abc", 400, "is not a field name"),
    ("/field/justone", 400, "/field/NAMESPACE/FIELD"),
    ("/field/lab/series/x?after=5&before=9", 400, "not both"),
    ("/field/lab/series/x?limit=0", 400, "limit='0'"),
    ("/log?limit=100000", 400, "limit='100000'"),
    ("/log?seq=1000000", 404, "past the end of the log"),
    ("/log?ns=nowhere", 404, "there is no namespace 'nowhere'"),
    ("/log?field=nothing_like_it", 404, "no namespace has a field 'nothing_like_it'"),
    ("/log?from=2024-01-02&to=2024-01-01", 400, "ends before it starts"),
    ("/log?ns=a//b%3C", 400, "is not a namespace"),
    ("/tree?prefix=nowhere", 404, "there is no namespace 'nowhere'"),
    ("/tree?offset=-1", 400, "offset='-1'"),
    ("/nope", 404, "there is no page at /nope"),
]


@pytest.mark.parametrize(("path", "status", "message"), BAD, ids=[p for p, _, _ in BAD])
def test_bad_input_gets_a_clear_4xx(web_client: Any, path: str, status: int, message: str) -> None:
    page = web_client.get(path)
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    assert message in page.text.replace("&#39;", "'")
    assert "Traceback" not in page.text
    api_path = "/api" + path if path != "/nope" else "/api/nope"
    if path == "/nope":
        message = "there is no page at /api/nope"
    if "partial=" in path:  # parts of pages are for the pages' script only
        message = "unknown parameter 'partial'"
    answer = web_client.get(api_path)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["status"] == status and message in error["message"]


def test_writing_methods_are_refused(web_client: Any) -> None:
    for method in ("post", "put", "delete", "patch"):
        answer = getattr(web_client, method)("/api/overview")
        assert answer.status_code == 405
        assert "only reads" in answer.json()["error"]["message"]


# --------------------------------------------------------------------------- sources


def test_a_dump_file_is_served_as_it_is(tmp_path: Path, web_log: Path) -> None:
    from starlette.testclient import TestClient

    from appendmuch.web.opening import open_source
    from appendmuch.web.server import make_app

    driver = open_log(Target(str(web_log)))
    dump = tmp_path / "web.msgpack"
    dump.write_bytes(b"".join(driver.dump()))
    driver.close()
    source = open_source(str(dump))
    try:
        with TestClient(make_app(source), base_url="http://127.0.0.1") as client:
            got = get_json(client, "/api/overview")
            assert (got["backend"], got["table"], got["live"]) == ("dump", None, False)
            assert got["rows"] == len(rows_of(web_log))
            assert got["writer"]["mode"] == "dump"
            assert client.get("/export/log").text == export_of(web_log)
    finally:
        source.close()
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x93not a dump at all")
    from appendmuch.errors import DatabaseError

    with pytest.raises(DatabaseError, match="neither a SQLite database nor an appendmuch dump"):
        open_source(str(garbage))


def test_a_postgresql_table_is_served(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from appendmuch.web.opening import open_source
    from appendmuch.web.server import make_app
    from backends import PostgresBackend, pg_conninfo
    from webfixtures import pg_url, write_demo

    backend = PostgresBackend(pg_conninfo())
    try:
        with Store(backend.driver()) as store:
            write_demo(store)
        raw = backend.raw_rows()
        source = open_source(pg_url(backend.conninfo), table_prefix=backend.prefix)
        try:
            with TestClient(make_app(source), base_url="http://127.0.0.1") as client:
                got = get_json(client, "/api/overview")
                assert (got["backend"], got["rows"]) == ("postgresql", len(raw))
                assert got["table"] == f"{backend.prefix}_values"
                state = get_json(client, "/api/ns/session/s0/player/p2")
                assert {f["field"]: f["seq"] for f in state["fields"]} == {
                    k: s for k, (s, _v) in state_at(raw, "session/s0/player/p2", 10**9).items()
                }
        finally:
            source.close()
    finally:
        backend.cleanup()


def test_an_internal_error_is_a_page_not_a_traceback(
    web_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.testclient import TestClient

    from appendmuch.web import pages
    from appendmuch.web.opening import open_source
    from appendmuch.web.server import make_app

    def broken(view: Any) -> Any:
        raise RuntimeError("the disk said no")

    monkeypatch.setattr(pages, "overview_model", broken)  # a fault injected into one page
    source = open_source(str(web_log))
    try:
        app = make_app(source)
        with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
            page = client.get("/")
            assert page.status_code == 500
            assert "RuntimeError: the disk said no" in page.text
            assert "Traceback" not in page.text and 'File "' not in page.text
            answer = client.get("/api/overview")
            assert answer.status_code == 500
            assert answer.json()["error"]["message"].endswith("(RuntimeError: the disk said no)")
            assert client.get("/api/log?limit=1").status_code == 200  # the rest goes on
    finally:
        source.close()
