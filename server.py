"""The playground's server: a loaded model behind the page's own API and an OpenAI-compatible one.

    create_app(serving.Server(serving.load("out/ckpt.pt", "cpu"), "cpu"))    # what playground.py serves

The app is two routers of module-level handlers over one Server (serving.py):
  /api   the page (static/): page_api.py
  /v1    OpenAI's shapes: openai_api.py
and, around them, OpenAI's error shape for every error and the Gate every request passes (API key, JSON, size).
"""

import hmac

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from i18n import REQUESTED
from openai_api import openai_api
from page_api import page_api
from plots import BUNDLED_FONT
from utils import REPO_DIR

STATIC = REPO_DIR / "static"
# The largest valid request is 8 prompts of 4,000 characters; escaped as JSON (a 4-byte character as a \\uXXXX pair,
# 12 bytes) that is 384 KB. 1 MiB leaves room for the rest and refuses a 100 MB body before reading it.
MAX_BODY_BYTES = 1 << 20
# The names this computer has for itself: a server bound to one of them answers only requests addressed to them.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# What an API key guards: both APIs, and the description of them.
GUARDED = ("/v1/", "/api/", "/openapi.json", "/docs", "/redoc")


def error_response(status, message, param=None, kind="invalid_request_error", code=None):
    """OpenAI's error shape, whatever raised it: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


async def invalid_request(request, exc):
    """Malformed JSON or a field out of range: OpenAI's error shape, no traceback."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":  # its location is a byte offset, not a field
        return error_response(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
    return error_response(400, message, where)


async def http_error(request, exc):
    """Our own 400s (already in OpenAI's shape), and Starlette's 404, 405 and body-parsing errors, with their headers
    (a 405's Allow)."""
    if isinstance(exc.detail, dict):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    response = error_response(exc.status_code, str(exc.detail), kind=kind)
    response.headers.update(exc.headers or {})
    return response


def create_app(server, cors=None, hosts=None):
    """The app: the page, its API and the OpenAI API over one Server.

    cors: an origin (https://example.org) whose pages may call the API from a browser; by default only the page
    served here may (the browser's same-origin rule). hosts: the Host names requests may be addressed to (None:
    any); playground.py gives LOCAL_HOSTS when it binds this computer only, so a DNS-rebinding page can't reach it.
    """
    app = FastAPI(title="Mini-GPT playground", docs_url=None, redoc_url=None)
    app.state.server = server
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)  # FastAPI's HTTPException is one too

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/fonts/MiniGPT-CJK.otf", include_in_schema=False)
    def font():  # the page's Chinese, on a computer with no CJK font (the file plots.py draws with)
        return FileResponse(BUNDLED_FONT, media_type="font/otf")

    app.include_router(page_api)
    app.include_router(openai_api)
    gate = Gate(app, server.api_key, hosts)
    if not cors:
        return gate
    # Starlette's CORS middleware is plain ASGI too; it answers a browser's preflight, which carries no key, itself.
    allowed = CORSMiddleware(gate, allow_origins=[cors], allow_methods=["GET", "POST"],
                             allow_headers=["Authorization", "Content-Type"])
    allowed.state = gate.state
    return allowed


async def drain(receive, seen=0):
    """Read the rest of a refused body, keeping none of it, up to 16 times the limit (a client sending more than
    that is cut off)."""
    while seen < 16 * MAX_BODY_BYTES:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class Gate:
    """What every request passes before the app sees it (plain ASGI: Starlette's middleware classes would hide a
    client's disconnect from the handlers):
      - its Host is one of `hosts`, when given (403): a DNS-rebinding page names its own host;
      - the API key, when the server has one (401): the Bearer scheme in any case (RFC 7235), compared in constant
        time, on both APIs and their description;
      - a POST body is JSON (415): application/json, or no type at all, which is read as JSON;
      - a body over MAX_BODY_BYTES is a 413, before it is read (Content-Length) or as soon as it passes the limit
        (a chunked body), so a huge body costs neither time nor memory."""

    def __init__(self, app, api_key=None, hosts=None):
        self.app, self.api_key, self.hosts = app, api_key, hosts
        self.state = app.state  # tests and tools reach the Server through app.state

    def refusal(self, scope, headers):
        """The error response a request gets before the app sees it, or None."""
        host = headers.get(b"host", b"").decode("latin-1").lower()
        name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        if self.hosts is not None and name not in self.hosts:
            return error_response(403, f"this server answers requests for {', '.join(self.hosts)}, not for the Host "
                                       f"{host!r}; open it as http://localhost:<port>", kind="permission_error")
        if self.api_key and scope["path"].startswith(GUARDED):
            scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                refused = error_response(401, "a valid API key is required: Authorization: Bearer <key>",
                                         kind="authentication_error", code="invalid_api_key")
                refused.headers["WWW-Authenticate"] = 'Bearer realm="mini-gpt"'
                return refused
        kind = headers.get(b"content-type", b"application/json").decode("latin-1").split(";")[0].strip().lower()
        if scope["method"] == "POST" and kind != "application/json":
            return error_response(415, f"the body is {kind}; send JSON with Content-Type: application/json")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        # The page asks for its language (Accept-Language): its errors come back in it, Chinese on the Chinese page.
        asked = headers.get(b"accept-language", b"").decode("latin-1").strip().lower()
        language = REQUESTED.set(("zh" if asked.startswith("zh") else "en") if asked else None)
        try:
            await self.answer(scope, receive, send, headers)
        finally:
            REQUESTED.reset(language)

    async def answer(self, scope, receive, send, headers):
        refused = self.refusal(scope, headers)
        if refused is not None:
            return await refused(scope, receive, send)
        if b"content-type" not in headers:  # a body sent with no type: read it as the JSON it must be
            scope = {**scope, "headers": [*scope.get("headers", []), (b"content-type", b"application/json")]}
        length = headers.get(b"content-length", b"0")
        too_large = error_response(413, f"the request body is over {MAX_BODY_BYTES:,} bytes, more than any valid "
                                        "request needs")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await drain(receive)  # so the client can finish sending and read the answer, not a broken pipe
            return await too_large(scope, receive, send)
        seen, over = 0, False

        async def counted():  # the body as the app reads it: cut off once it passes the limit
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request" and not over:
                seen += len(message.get("body", b""))
                if seen > MAX_BODY_BYTES:
                    over = True
                    if message.get("more_body"):
                        await drain(receive, seen)
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def answered(message):  # the app's answer, or the 413 in its place
            if not over:
                return await send(message)
            if message["type"] == "http.response.start":
                await too_large(scope, receive, send)

        await self.app(scope, counted, answered)
