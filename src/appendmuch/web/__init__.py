"""A web view of a log: ``appendmuch serve DB`` (the optional ``web`` extra).

Read-only pages and a JSON API over a log opened read-only: an overview, the
namespace tree, a namespace as of any moment (a time scrubber), a field's history, the
log itself, live as writers commit.  See docs/web.md.

Importing this package imports nothing of the web stack; :mod:`appendmuch.web.server`
(Starlette, uvicorn, Jinja2) is imported only when the server starts.
"""
