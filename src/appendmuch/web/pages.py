"""The pages and the JSON API: one model per page, shown as HTML or returned as JSON.

Every page ``/X`` has its API twin ``/api/X`` built from the same model, so a script
sees exactly what a person sees.  Handlers are plain functions (Starlette runs them in
its thread pool, away from the event streams); each checks its query parameters first
(:class:`~appendmuch.web.params.Params`) and raises
:class:`~appendmuch.web.params.WebError` for anything it cannot answer.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import Any, Literal, cast

import orjson
from jinja2 import Environment
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from ..drivers.base import Row
from ..rendering import iso_time
from .charts import bar_chart
from .exporting import export_chunks, stored_row
from .fieldpage import field_page
from .index import Counts, FieldRef
from .live import Hub, event_stream
from .logpage import LogFilter, log_page, matching_rows
from .namespaces import Steps, namespace_page, search_page, tree_page
from .opening import Source
from .params import BadRequestError, NotFoundError, Params, check_field, check_namespace

__all__ = ["View", "json_response", "routes"]

#: bars of the overview's writes-over-time chart
_BUCKETS = 60


@dataclass
class View:
    """What every handler shares: the opened log, the templates, the live hub."""

    source: Source
    env: Environment
    hub: Hub
    #: the server has a token (shown in the page footer)
    guarded: bool

    def render(self, template: str, **context: Any) -> HTMLResponse:
        """A page (or fragment) from a template."""
        page = self.env.get_template(template).render(source=self.source, **context)
        return HTMLResponse(page)


def json_response(document: Any, status: int = 200) -> Response:
    """A JSON response (orjson: values already in their JSON form pass through)."""
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


def _view(request: Request) -> View:
    return cast(View, request.app.state.view)


def _params(request: Request, allowed: set[str] | frozenset[str]) -> Params:
    if not request.url.path.startswith(("/api/", "/export/")):
        allowed = {*allowed, "partial"}  # a part of a page, for its script
    return Params(request.query_params, allowed)


def _partial(params: Params, allowed: tuple[str, ...]) -> str | None:
    value = params.text("partial")
    if value is not None and value not in allowed:
        raise BadRequestError(f"partial={value!r}: this page has the parts {', '.join(allowed)}")
    return value


# --------------------------------------------------------------------------- overview


@dataclass
class Overview:
    """The overview page: what the log is, how big, who writes it, how it grew."""

    source: Source
    counts: Counts
    writer: tuple[str, int | None]
    busiest: list[tuple[str, int]]
    histogram: list[tuple[float, float, int]]
    size: int | None
    follow_error: str | None

    @property
    def writer_text(self) -> str:
        """The writer status for people."""
        mode, count = self.writer
        if mode == "single":
            return "a single writer"
        if mode == "shared":
            return "shared writers (number unknown)" if count is None else f"{count} shared writers"
        if mode == "dump":
            return "none (a dump file)"
        return mode

    @property
    def chart(self) -> Markup | None:
        """Writes over time, as SVG."""
        if not self.histogram:
            return None
        return bar_chart(self.histogram, label=f"writes over time ({_BUCKETS} bars)")

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        c = self.counts
        mode, count = self.writer
        return {
            "backend": self.source.backend,
            "database": self.source.database,
            "table": self.source.table,
            "live": self.source.live,
            "rows": c.rows,
            "first_seq": c.first_seq,
            "last_seq": c.last_seq,
            "first_time": iso_time(c.first_time),
            "last_time": iso_time(c.last_time),
            "namespaces": c.namespaces,
            "fields": c.fields,
            "current_fields": c.fields - c.deleted_fields,
            "deleted_fields": c.deleted_fields,
            "tombstones": c.tombstones,
            "size": self.size,
            "writer": {"mode": mode, "writers": count},
            "follow_error": self.follow_error,
            "busiest": [{"namespace": ns, "rows": rows} for ns, rows in self.busiest],
            "writes_over_time": [
                {"start": iso_time(a), "end": iso_time(b), "rows": n} for a, b, n in self.histogram
            ],
        }


def overview_model(view: View) -> Overview:
    """O(namespaces) for the busiest, O(rows / 256) for the chart."""
    source = view.source
    try:
        size = source.store.driver.size()
    except Exception:  # the size is a nicety; a lost server must not lose the page
        size = None
    return Overview(
        source=source,
        counts=source.index.counts(),
        writer=source.writer(),
        busiest=source.index.busiest(10),
        histogram=source.index.histogram(_BUCKETS),
        size=size,
        follow_error=source.follow_error(),
    )


def overview(request: Request) -> Response:
    """``/``: the overview (``partial=stats``: its figures only)."""
    view = _view(request)
    params = _params(request, set())
    part = _partial(params, ("stats",))
    model = overview_model(view)
    if part == "stats":
        return view.render("_stats.html", o=model)
    return view.render("overview.html", o=model, page="overview")


def api_overview(request: Request) -> Response:
    """``/api/overview``."""
    _params(request, set())
    return json_response(overview_model(_view(request)).to_json())


# --------------------------------------------------------------------------- tree and search

_TREE = {"prefix", "q", "field", "offset", "limit"}


def _tree_or_search(request: Request) -> tuple[Params, Any, Any]:
    params = _params(request, _TREE)
    index = _view(request).source.index
    offset = params.integer("offset", 0, 0, 10**9)
    limit = params.integer("limit", 200, 1, 5000)
    q = params.text("q", limit=2000)
    name = params.text("field", limit=200)
    prefix = params.namespace("prefix")
    search = None
    if q is not None or name is not None:
        search = search_page(index, q, name, offset, limit)
        tree = tree_page(index, prefix, 0, limit)
    else:
        tree = tree_page(index, prefix, offset, limit)
    return params, tree, search


def tree(request: Request) -> Response:
    """``/tree``: a level of the namespace tree, or search results."""
    params, level, search = _tree_or_search(request)
    part = _partial(params, ("tree",))
    view = _view(request)
    template = "_tree.html" if part else "tree.html"
    return view.render(template, tree=level, search=search, page="tree")


def api_tree(request: Request) -> Response:
    """``/api/tree``: children of a prefix (paginated)."""
    _params, level, search = _tree_or_search(request)
    if search is not None:
        raise BadRequestError("q and field belong to /api/search")
    return json_response(level.to_json())


def api_search(request: Request) -> Response:
    """``/api/search``: namespaces by name and field (paginated)."""
    params = _params(request, {"q", "field", "offset", "limit"})
    result = search_page(
        _view(request).source.index,
        params.text("q", limit=2000),
        params.text("field", limit=200),
        params.integer("offset", 0, 0, 10**9),
        params.integer("limit", 200, 1, 5000),
    )
    return json_response(result.to_json())


# --------------------------------------------------------------------------- namespace

_NAMESPACE = {"at", "step", "time"}


def _namespace(request: Request, extra: frozenset[str] = frozenset()) -> tuple[Params, Any]:
    params = _params(request, _NAMESPACE | extra)
    dbns = check_namespace(request.path_params["namespace"])
    step_text = params.text("step")
    step = None if step_text is None else params.integer("step", 0, 0, 1 << 62)
    model = namespace_page(
        _view(request).source.index,
        dbns,
        at=params.seq("at"),
        step=step,
        moment=params.time("time"),
    )
    return params, model


def namespace(request: Request) -> Response:
    """``/ns/NAMESPACE``: its fields as of ``at``/``step``/``time`` (``partial=state``)."""
    params, model = _namespace(request)
    part = _partial(params, ("state",))
    template = "_state.html" if part else "namespace.html"
    return _view(request).render(template, ns=model, page="namespace")


def api_namespace(request: Request) -> Response:
    """``/api/ns/NAMESPACE``."""
    return json_response(_namespace(request)[1].to_json())


def api_steps(request: Request) -> Response:
    """``/api/steps/NAMESPACE``: the seqs where it changed (paginated by ``offset``)."""
    params = _params(request, {"offset", "limit"})
    dbns = check_namespace(request.path_params["namespace"])
    index = _view(request).source.index
    if index.node(dbns) is None:
        raise NotFoundError(f"there is no namespace {dbns!r} in the log")
    steps = Steps(index.namespace_fields(dbns))
    offset = params.integer("offset", 0, 0, 1 << 62)
    limit = params.integer("limit", 1000, 1, 10000)
    seqs: list[int] = []
    if offset < steps.count:
        start = steps.select(offset)
        found = _own_entries(index.namespace_fields(dbns), start)
        seqs = [ref.log.seqs[at] for ref, at in islice(found, limit)]
    return json_response(
        {"namespace": dbns, "steps": steps.count, "offset": offset, "limit": limit, "seqs": seqs}
    )


def _own_entries(refs: list[FieldRef], start: int = 0) -> Iterator[tuple[FieldRef, int]]:
    """``(field, position)`` of the entries of these fields from seq ``start`` on, in
    seq order (a merge of their columns)."""

    def column(ref: FieldRef) -> Iterator[tuple[int, int, FieldRef]]:
        seqs = ref.log.seqs
        count = len(seqs)
        first = bisect_left(seqs, start, 0, count)
        for at in range(first, count):
            yield seqs[at], at, ref

    for _seq, at, ref in heapq.merge(*(column(ref) for ref in refs), key=itemgetter(0)):
        yield ref, at


# --------------------------------------------------------------------------- field

_FIELD = {"after", "before", "limit"}


def _split_field(rest: str) -> tuple[str, str]:
    dbns, sep, name = rest.rstrip("/").rpartition("/")
    if not sep:
        raise BadRequestError("a field's address is /field/NAMESPACE/FIELD")
    return check_namespace(dbns), check_field(name)


def _field(request: Request) -> tuple[Params, Any]:
    params = _params(request, _FIELD)
    dbns, name = _split_field(request.path_params["rest"])
    model = field_page(
        _view(request).source.index,
        dbns,
        name,
        after=params.seq("after", low=0),
        before=params.seq("before", low=0),
        limit=params.integer("limit", 500, 1, 5000),
    )
    return params, model


def field(request: Request) -> Response:
    """``/field/NAMESPACE/FIELD``: its versions (``partial=versions``)."""
    params, model = _field(request)
    part = _partial(params, ("versions",))
    template = "_versions.html" if part else "field.html"
    return _view(request).render(template, f=model, page="field")


def api_field(request: Request) -> Response:
    """``/api/field/NAMESPACE/FIELD``."""
    return json_response(_field(request)[1].to_json())


# --------------------------------------------------------------------------- log

_LOG = {"ns", "field", "context", "from", "to", "after", "before", "seq", "limit"}


def _filters(params: Params) -> LogFilter:
    return LogFilter(
        namespace=params.namespace("ns"),
        field=params.field("field"),
        context=params.text("context", limit=500),
        since=params.time("from"),
        until=params.time("to"),
    )


def _log(request: Request) -> tuple[Params, Any]:
    params = _params(request, _LOG)
    index = _view(request).source.index
    filt = _filters(params)
    after, before = params.seq("after", low=0), params.seq("before", low=0)
    jump = params.seq("seq")
    if jump is not None:
        if after is not None or before is not None:
            raise BadRequestError("give seq (a seq to jump to), or after/before, not both")
        last = index.counts().last_seq or 0
        if jump > last:
            raise NotFoundError(f"seq {jump} is past the end of the log (its last seq is {last})")
        after = jump - 1
    model = log_page(
        index,
        filt,
        after=after,
        before=before,
        limit=params.integer("limit", 100, 1, 1000),
        highlight=jump,
    )
    return params, model


def log(request: Request) -> Response:
    """``/log``: entries in seq order, filtered (``partial=rows``: table rows only)."""
    params, model = _log(request)
    part = _partial(params, ("rows",))
    template = "_log_rows.html" if part else "log.html"
    response = _view(request).render(template, log=model, page="log")
    if model.follow_from is not None:
        # where the page's live updates go on from (the rows may all be filtered out)
        response.headers["x-follow-from"] = str(model.follow_from)
    return response


def api_log(request: Request) -> Response:
    """``/api/log``."""
    return json_response(_log(request)[1].to_json())


# --------------------------------------------------------------------------- events


async def api_events(request: Request) -> Response:
    """``/api/events``: server-sent events as the log grows (``ns``, ``field``: also
    the last change of that namespace or field)."""
    params = _params(request, {"ns", "field"})
    dbns = params.namespace("ns")
    name = params.field("field")
    index = _view(request).source.index
    if dbns is not None and index.node(dbns) is None:
        raise NotFoundError(f"there is no namespace {dbns!r} in the log")
    if name is not None and dbns is None:
        raise BadRequestError("field needs ns (the field's namespace)")
    stream = event_stream(_view(request).hub, dbns, name)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},  # a proxy must not hold the events back
    )


# --------------------------------------------------------------------------- exports


def _export_response(rows: Iterator[Row], params: Params, name: str, shape: str) -> Response:
    fmt = cast(Literal["csv", "jsonl"], params.choice("format", ("csv", "jsonl"), "csv"))
    kind = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    chunks = export_chunks(rows, format=fmt, shape=cast(Literal["log", "latest"], shape))
    return StreamingResponse(
        chunks,
        media_type=kind,
        headers={"content-disposition": f'attachment; filename="{name}.{fmt}"'},
    )


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)[:100] or "log"


def export_log(request: Request) -> Response:
    """``/export/log``: every entry the log page's filters select."""
    params = _params(request, {*_LOG, "format"} - {"after", "before", "seq", "limit"})
    index = _view(request).source.index
    filt = _filters(params)
    rows = (stored_row(ref, at) for ref, at in matching_rows(index, filt))
    return _export_response(rows, params, "appendmuch-log", "log")


def export_namespace(request: Request) -> Response:
    """``/export/ns/NAMESPACE``: its state as shown (``shape=latest``, one row) or its
    entries up to that moment (``shape=log``)."""
    params, model = _namespace(request, frozenset({"format", "shape"}))
    shape = params.choice("shape", ("latest", "log"), "latest")
    index = _view(request).source.index
    refs = index.namespace_fields(model.namespace)
    upto = model.at or 0
    if shape == "latest":
        by_name = {ref.name: ref for ref in refs}
        chosen = [(by_name[s.name], s.version - 1) for s in model.fields if s.entry is not None]
        chosen.sort(key=lambda pair: pair[0].log.seqs[0])  # columns in order of first write
        rows: Iterator[Row] = (stored_row(ref, at) for ref, at in chosen)
    else:
        rows = (stored_row(ref, at) for ref, at in _own_entries(refs) if ref.log.seqs[at] <= upto)
    return _export_response(rows, params, _safe_name(model.namespace), shape)


def export_field(request: Request) -> Response:
    """``/export/field/NAMESPACE/FIELD``: every version."""
    params = _params(request, {"format"})
    dbns, name = _split_field(request.path_params["rest"])
    ref = _view(request).source.index.field(dbns, name)
    if ref is None:
        raise NotFoundError(f"namespace {dbns!r} has no field {name!r}")
    count = len(ref.log.seqs)
    rows = (stored_row(ref, at) for at in range(count))
    return _export_response(rows, params, _safe_name(f"{dbns}-{name}"), "log")


def routes() -> list[Route]:
    """Every route of the web view but the static files."""
    get = ["GET"]
    table: list[tuple[str, Callable[[Request], Any]]] = [
        ("/", overview),
        ("/tree", tree),
        ("/ns/{namespace:path}", namespace),
        ("/field/{rest:path}", field),
        ("/log", log),
        ("/api/overview", api_overview),
        ("/api/tree", api_tree),
        ("/api/search", api_search),
        ("/api/ns/{namespace:path}", api_namespace),
        ("/api/steps/{namespace:path}", api_steps),
        ("/api/field/{rest:path}", api_field),
        ("/api/log", api_log),
        ("/api/events", api_events),
        ("/export/log", export_log),
        ("/export/ns/{namespace:path}", export_namespace),
        ("/export/field/{rest:path}", export_field),
    ]
    return [Route(path, endpoint, methods=get) for path, endpoint in table]
