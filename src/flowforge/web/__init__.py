"""The browser pages: Swagger UI at /docs and the operator dashboard at /dashboard.

Both are static files shipped in the package (Swagger UI's from the swagger-ui-bundle
wheel, the dashboard's beside this module): no CDN, no build step, they work offline. They
are open without a token; the dashboard asks for one and calls the JSON API with it, like
any other client. A strict Content-Security-Policy keeps them to this origin.

Each page names its files with a version, ``/dashboard/dashboard.js?v=<digest of the
file>``, and the page itself is revalidated on every load (``no-cache``): after an
upgrade a browser fetches the new files at once, never an hour-old dashboard.js beside
the new page. The files, versioned so, are cached for a day.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import bottle
import swagger_ui_bundle

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER = Path(swagger_ui_bundle.swagger_ui_path)
# The only files the pages load, each from its directory (the Swagger UI bundle also ships
# maps and other builds): a fixed list, so a name can never be a path into the package.
DOCS_FILES = {
    **dict.fromkeys(
        ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"),
        SWAGGER,
    ),
    "docs.js": STATIC,
}
DASHBOARD_FILES = dict.fromkeys(
    ("dashboard.css", "dashboard.js", "queues.js", "schedules.js"), STATIC
)
PAGE_FILES = {"/docs": DOCS_FILES, "/dashboard": DASHBOARD_FILES}
# Swagger UI sets inline styles and shows SVG/data: images; nothing leaves this origin.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


@functools.cache
def versioned(name: str, prefix: str) -> bytes:
    """The page ``name`` with each of its files under ``prefix`` named with a version
    (the first 12 hex digits of its SHA-256): read once per process."""
    files = PAGE_FILES[prefix]

    def version(match: re.Match[str]) -> str:
        file = match.group(2)
        if file not in files:
            raise LookupError(f"{name} names {prefix}/{file}, which is not served")
        digest = hashlib.sha256((files[file] / file).read_bytes()).hexdigest()[:12]
        return f'{match.group(1)}{prefix}/{file}?v={digest}"'

    html = (STATIC / name).read_text()
    return re.sub(rf'((?:src|href)="){re.escape(prefix)}/([^"?]+)"', version, html).encode()


def _page(name: str, prefix: str) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(versioned(name, prefix))
    response.set_header("Content-Type", "text/html; charset=utf-8")
    response.set_header("Cache-Control", "no-cache")
    return _secure(response)


def _secure(response: bottle.HTTPResponse) -> bottle.HTTPResponse:
    response.set_header("Content-Security-Policy", CSP)
    response.set_header("X-Content-Type-Options", "nosniff")
    response.set_header("Referrer-Policy", "no-referrer")
    return response


def _asset(files: dict[str, Path], name: str) -> bottle.HTTPResponse:
    root = files.get(name)
    if root is None:
        raise bottle.HTTPError(404, f"no such file: {name}")
    response = bottle.static_file(name, root=str(root))
    response.set_header("Cache-Control", "public, max-age=86400")  # named with a version
    return _secure(response)


def add_routes(app: bottle.Bottle) -> None:
    """GET /docs, /dashboard and the files they load."""
    app.route("/docs", "GET", lambda: _page("docs.html", "/docs"))
    app.route("/docs/<name>", "GET", lambda name: _asset(DOCS_FILES, name))
    app.route("/dashboard", "GET", lambda: _page("dashboard.html", "/dashboard"))
    app.route("/dashboard/<name>", "GET", lambda name: _asset(DASHBOARD_FILES, name))
