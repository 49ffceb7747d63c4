"""The browser pages: Swagger UI at /docs and the operator dashboard at /dashboard.

Both are static files shipped in the package (Swagger UI's from the swagger-ui-bundle
wheel, the dashboard's beside this module): no CDN, no build step, they work offline. They
are open without a token; the dashboard asks for one and calls the JSON API with it, like
any other client. A strict Content-Security-Policy keeps them to this origin.
"""

from __future__ import annotations

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
# Swagger UI sets inline styles and shows SVG/data: images; nothing leaves this origin.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


def _page(name: str) -> bottle.HTTPResponse:
    response = bottle.static_file(name, root=str(STATIC), mimetype="text/html")
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
    response.set_header("Cache-Control", "public, max-age=3600")
    return _secure(response)


def add_routes(app: bottle.Bottle) -> None:
    """GET /docs, /dashboard and the files they load."""
    app.route("/docs", "GET", lambda: _page("docs.html"))
    app.route("/docs/<name>", "GET", lambda name: _asset(DOCS_FILES, name))
    app.route("/dashboard", "GET", lambda: _page("dashboard.html"))
    app.route("/dashboard/<name>", "GET", lambda name: _asset(DASHBOARD_FILES, name))
