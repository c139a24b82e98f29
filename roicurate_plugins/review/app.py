"""The review page's web server (Starlette, run by uvicorn on 127.0.0.1 only).

Everything lives under ``/<token>/``, a random per-session token (``secrets.token_urlsafe``): a request without it
gets 403 before any route runs, so another user of the machine can neither read the page nor write an answer. A
request whose Host header is not this server's own address is refused too (a web page elsewhere cannot reach it
through DNS rebinding). Files are never served by path: the page's static files are a fixed list shipped
as package data, pictures are drawn from the unit in memory, and an ROI number outside the unit is a 404.
"""
import secrets
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from roicurate import RoicurateError

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"}
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'"}


def static_file(name):
    return resources.files("roicurate_plugins.review").joinpath("static", name).read_bytes()


class TokenGate:
    """ASGI middleware: 403 unless the path starts with ``/<token>/`` (compared in constant time) and the Host
    header names 127.0.0.1 or localhost."""

    def __init__(self, app, token):
        self.app, self.prefix = app, f"/{token}/".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("raw_path") or scope["path"].encode()
            host = dict(scope.get("headers") or []).get(b"host", b"").split(b":")[0]
            ok = secrets.compare_digest(path[:len(self.prefix)], self.prefix) and host in (b"127.0.0.1", b"localhost")
            if not ok:
                await PlainTextResponse("forbidden: this page needs the URL roicurate review printed", 403,
                                        headers=HEADERS)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _roi(request, session):
    """The ROI number in the path, or a 404 naming the range."""
    try:
        return session.check_roi(int(request.path_params["roi"]))
    except (ValueError, RoicurateError):
        raise LookupError(f"no ROI {request.path_params['roi']!r}: this unit has ROIs 0 to {session.n - 1}") from None


def make_app(session, token):
    """The Starlette application of ``session`` (a ReviewSession) behind ``token``."""

    def page(request):
        name = request.path_params.get("name", "index.html")
        if name not in STATIC:
            return PlainTextResponse("not found", 404, headers=HEADERS)
        return Response(static_file(name), media_type=STATIC[name], headers=HEADERS)

    def state(request):
        return JSONResponse(session.state(), headers=HEADERS)

    def roi(request):
        return JSONResponse(session.roi(_roi(request, session)), headers=HEADERS)

    def trace(request):
        return JSONResponse(session.trace(_roi(request, session)), headers=HEADERS)

    def picture(request):
        kind = request.path_params["kind"]
        if kind not in ("crop", "why"):
            return PlainTextResponse("not found", 404, headers=HEADERS)
        return Response(session.picture(kind, _roi(request, session)), media_type="image/png", headers=HEADERS)

    def fov(request):
        return Response(session.picture("fov"), media_type="image/png", headers=HEADERS)

    async def answer(request):
        try:
            body = await request.json()
            roi, label = body["roi"], body["label"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send JSON {"roi": N, "label": 0 or 1}'}, 400, headers=HEADERS)
        if type(roi) is not int or label not in (0, 1) or type(label) is not int:
            return JSONResponse({"error": "roi must be an integer, label 0 (not a cell) or 1 (cell)"}, 400,
                                headers=HEADERS)
        if not 0 <= roi < session.n:
            return JSONResponse({"error": f"no ROI {roi}: this unit has ROIs 0 to {session.n - 1}"}, 404,
                                headers=HEADERS)
        return JSONResponse(await run_in_threadpool(session.answer, roi, label), headers=HEADERS)

    def undo(request):
        return JSONResponse(session.undo(), headers=HEADERS)

    async def not_found(request, exc):
        return JSONResponse({"error": str(exc)}, 404, headers=HEADERS)

    async def failed(request, exc):
        return JSONResponse({"error": str(exc)}, 409, headers=HEADERS)

    routes = [Route("/", page), Route("/static/{name}", page), Route("/api/state", state),
              Route("/api/roi/{roi}", roi), Route("/api/trace/{roi}", trace),
              Route("/img/fov.png", fov), Route("/img/{kind}/{roi}.png", picture),
              Route("/api/answer", answer, methods=["POST"]), Route("/api/undo", undo, methods=["POST"])]
    app = Starlette(routes=[Mount(f"/{token}", routes=routes)],
                    exception_handlers={LookupError: not_found, RoicurateError: failed})
    app.add_middleware(TokenGate, token=token)
    return app
