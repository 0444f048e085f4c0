"""The viewer's web server: a small WSGI app on Werkzeug's router, served by the standard library.

Pages and images are made on request from the run directory (:class:`.data.RunData`). Only
requests addressed to this machine by name (or to the ``--host`` asked for) are answered,
which defeats DNS rebinding.
"""

from __future__ import annotations

import html
import json
from http import HTTPStatus
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..runs import RunError
from .data import RunData

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
KINDS = {"html": "text/html; charset=utf-8", "js": "text/javascript", "css": "text/css"}

URLS = Map([
    Rule("/", endpoint="index"),
    Rule("/static/<name>", endpoint="static"),
    Rule("/api/run", endpoint="run"),
    Rule("/api/frame/<int:t>", endpoint="frame"),
    Rule("/api/image/<int:t>/<name>.png", endpoint="image"),
    Rule("/api/neuron/<int:t>", endpoint="neuron"),
    Rule("/api/interventions/<int:t>", endpoint="interventions"),
    Rule("/api/analysis/<int:block>", endpoint="analysis"),
])


def error_page(message: str) -> bytes:
    """An HTML page saying why the run cannot be shown (``message``, escaped)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>rl-insens viewer</title></head>"
            f"<body style='font-family:sans-serif;margin:3em'><h1>Cannot show this run</h1>"
            f"<p id='error'>{html.escape(message)}</p></body></html>").encode()


def answer(body: bytes, kind: str, status: int = HTTPStatus.OK) -> Response:
    """A response of ``body`` as ``kind``, never cached: the pages change with the run."""
    return Response(body, status, content_type=kind, headers={"Cache-Control": "no-store"})


def answer_json(data, status: int = HTTPStatus.OK) -> Response:
    """``data`` as a JSON response (see :func:`answer`)."""
    return answer(json.dumps(data).encode(), "application/json", status)


class Viewer:
    """The WSGI app over one run (or over the reason it cannot be shown)."""

    def __init__(self, run: RunData | None, problem: str | None, hosts: set[str]) -> None:
        self.run, self.problem, self.hosts = run, problem, hosts

    def __call__(self, environ, start_response):
        return self.respond(Request(environ))(environ, start_response)

    def respond(self, request: Request) -> Response:
        """The response to ``request``: refused for an unknown host, the error page when the run cannot
        be shown, else its endpoint's answer (a JSON error for a bad address or argument)."""
        if request.host.lower() not in self.hosts:
            # A page elsewhere may point a DNS name at 127.0.0.1 (DNS rebinding); the Host
            # header still carries that name.
            return answer(b"unknown host", "text/plain", HTTPStatus.FORBIDDEN)
        if self.problem is not None:
            status = HTTPStatus.NOT_FOUND if request.path.startswith("/api/") else HTTPStatus.OK
            return answer(error_page(self.problem), KINDS["html"], status)
        try:
            endpoint, args = URLS.bind_to_environ(request.environ).match()
        except NotFound:
            return answer_json({"error": f"no such page: {request.path}"}, HTTPStatus.NOT_FOUND)
        try:
            return getattr(self, f"on_{endpoint}")(request, **args)
        except (KeyError, ValueError) as error:
            return answer_json({"error": str(error).strip("'\"")}, HTTPStatus.BAD_REQUEST)

    def on_index(self, request: Request) -> Response:
        return answer((STATIC / "index.html").read_bytes(), KINDS["html"])

    def on_static(self, request: Request, name: str) -> Response:
        path = STATIC / name
        if not path.is_file():
            return answer_json({"error": f"no such page: {request.path}"}, HTTPStatus.NOT_FOUND)
        return answer(path.read_bytes(), KINDS.get(path.suffix.lstrip("."), "text/plain"))

    def on_run(self, request: Request) -> Response:
        return answer_json(self.run.summary())

    def on_frame(self, request: Request, t: int) -> Response:
        return answer_json(self.run.frame(t))

    def on_image(self, request: Request, t: int, name: str) -> Response:
        return answer(self.run.image(t, name), "image/png")

    def on_neuron(self, request: Request, t: int) -> Response:
        return answer_json(self.run.neuron(t, request.args.get("layer", ""),
                                           int(request.args.get("index", "-1"))))

    def on_interventions(self, request: Request, t: int) -> Response:
        return answer_json(self.run.interventions(t))

    def on_analysis(self, request: Request, block: int) -> Response:
        return answer_json(self.run.analysis_block(block))


class ViewerServer(ThreadingMixIn, WSGIServer):
    """One thread per request; closing waits for requests in flight (a thread killed inside
    torch at exit aborts Python)."""

    daemon_threads, block_on_close = False, True
    problem: str | None = None


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no line per request
        pass


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ViewerServer:
    """A server (not yet running: call ``serve_forever``) for ``run_dir``; a bad run gets an error page."""
    try:
        run, problem = RunData(run_dir), None
    except RunError as error:
        run, problem = None, str(error)
    viewer = Viewer(run, problem, set())
    server = make_server(host, port, viewer, server_class=ViewerServer, handler_class=_Quiet)
    port = server.server_address[1]
    asked = f"[{host}]" if ":" in host and not host.startswith("[") else host
    names = {*LOCAL_HOSTS, asked.lower()}
    viewer.hosts = {f"{name}:{port}" for name in names} | (names if port == 80 else set())
    server.problem = problem
    return server
