"""The aiohttp application of the human queue: HTML pages for agents and a JSON API under ``/api/``.

Pages (session cookie from ``/login``)::

    GET  /                                      the tenant's queue (?reason=&step=&kind=&resolved=1)
    GET  /ticket/{topic}/{partition}/{offset}   one entry: the whole trail
    POST /ticket/{topic}/{partition}/{offset}/answer   form field ``text``
    POST /ticket/{topic}/{partition}/{offset}/replay

API (``Authorization: Bearer <tenant token>``), same paths under ``/api/``: ``GET /api/queue``,
``GET /api/ticket/...``, ``POST /api/ticket/.../answer`` (JSON ``{"text": ...}``), ``POST /api/ticket/.../replay``.

Another tenant's entry is answered exactly like one that does not exist (404), on every path.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from streams.config import Settings
from streams.ui import views
from streams.ui.auth import COOKIE, Auth, Session
from streams.ui.queue import (DEAD_LETTER, ESCALATION, MAX_ANSWER_CHARS, NotAnswerable, QueueError, QueueIndex,
                              case_for_answer, ensure_resolutions_topic)
from streams.ui.resolve import Resolver

log = logging.getLogger("triage.ui")

AUTH = web.AppKey("auth", Auth)
INDEX = web.AppKey("index", QueueIndex)
RESOLVER = web.AppKey("resolver", Resolver)
SETTINGS = web.AppKey("settings", Settings)
# Request storage keys (typed keys where this aiohttp has them: 3.12+).
_RequestKey = getattr(web, "RequestKey", None)
TENANT: Any = _RequestKey("tenant", str) if _RequestKey else "tenant"
SESSION: Any = _RequestKey("session", Session) if _RequestKey else "session"

PUBLIC = {"/login", "/ui.css", "/healthz"}
READY_WAIT_S = 15.0
NOT_FOUND = "No such ticket in your queue."
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- auth --------------------------------------------------------------------------------------------------
def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request but the login page and the stylesheet names a tenant, or goes no further."""
    if request.path in PUBLIC:
        return await handler(request)
    auth = request.app[AUTH]
    if request.path.startswith("/api/"):
        tenant = auth.tenant_for_token(_bearer(request))
        if tenant is None:
            return web.json_response({"error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="triage"'})
        request[TENANT] = tenant
        return await handler(request)
    session = auth.session(request.cookies.get(COOKIE))
    if session is None:
        if request.method == "GET":
            raise web.HTTPSeeOther("/login")
        return web.Response(status=401, text=views.error_page(401, "Log in first."), content_type="text/html")
    request[TENANT], request[SESSION] = session.tenant, session
    if request.method == "POST":
        form = await request.post()
        if not auth.check_csrf(session, form.get("csrf") if isinstance(form.get("csrf"), str) else None):
            return web.Response(status=403, text=views.error_page(403, "The form expired; reload the page and try "
                                                                       "again."), content_type="text/html")
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                                "base-uri 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path != "/ui.css":
        response.headers.setdefault("Cache-Control", "no-store")


def _tenant(request: web.Request) -> str:
    return request[TENANT]


def _csrf(request: web.Request) -> str:
    session: Session = request[SESSION]
    return request.app[AUTH].csrf_token(session)


async def _ready(request: web.Request) -> bool:
    index = request.app[INDEX]
    if index.ready:
        return True
    return await asyncio.get_running_loop().run_in_executor(None, index.wait_ready, READY_WAIT_S)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


# ---- shared ------------------------------------------------------------------------------------------------
def _filters(request: web.Request) -> dict[str, Any]:
    q = request.query
    kind = q.get("kind") or None
    return {"reason": q.get("reason") or None, "step": q.get("step") or None,
            "kind": kind if kind in (ESCALATION, DEAD_LETTER) else None,
            "include_resolved": q.get("resolved") in ("1", "true", "yes")}


def _status(index: QueueIndex, tenant: str, e: Any) -> str:
    if index.resolution(tenant, e) is not None:
        return "answered"
    if e.kind == DEAD_LETTER and index.replay_of(e) is not None:
        return "replayed"
    return "open"


def _entry_id(request: web.Request) -> str:
    m = request.match_info
    return f'{m["topic"]}/{int(m["partition"])}/{int(m["offset"])}'


def _answerable(e: Any, tenant: str) -> bool:
    try:
        case_for_answer(e, tenant)
        return True
    except NotAnswerable:
        return False


def _summary(index: QueueIndex, tenant: str, e: Any) -> dict[str, Any]:
    return {"id": e.id, "kind": e.kind, "topic": e.topic, "partition": e.partition, "offset": e.offset,
            "time_ms": e.timestamp_ms, "time": views.fmt_time(e.timestamp_ms), "correlation_id": e.correlation_id,
            "tenant": e.tenant, "subject": e.subject, "step": e.step, "reason": e.reason, "attempt": e.attempt,
            "status": _status(index, tenant, e), "url": views.ticket_url(e)}


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---- pages -------------------------------------------------------------------------------------------------
async def css(request: web.Request) -> web.Response:
    return web.Response(text=views.CSS, content_type="text/css", headers={"Cache-Control": "max-age=300"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ready": request.app[INDEX].ready})


async def login_form(request: web.Request) -> web.Response:
    return _html(views.login_page())


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = form.get("token")
    tenant = request.app[AUTH].tenant_for_token(token if isinstance(token, str) else None)
    if tenant is None:
        log.info("failed login from %s", request.remote)
        return _html(views.login_page("That token is not valid."), status=401)
    log.info("tenant %s logged in from %s", tenant, request.remote)
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.set_cookie(COOKIE, request.app[AUTH].new_session(tenant), httponly=True, samesite="Strict", path="/",
                    secure=request.secure, max_age=8 * 3600)
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    resp = web.Response(status=303, headers={"Location": "/login"})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def queue_page(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    ready = await _ready(request)
    index = request.app[INDEX]
    f = _filters(request)
    rows = [(e, _status(index, tenant, e)) for e in index.entries(tenant, **f)]
    everything = index.entries(tenant)
    notice = None
    if request.query.get("notice") == "answered":
        notice = f"Answered {request.query.get('cid', '')} by hand: the response is on tickets.responses and the " \
                 f"entry has left the queue."
    return _html(views.queue_page(tenant, _csrf(request), rows, reasons=sorted({e.reason for e in everything}),
                                  steps=sorted({e.step for e in everything}), reason=f["reason"], step=f["step"],
                                  notice=notice, loading=not ready))


async def _ticket_view(request: web.Request, *, status_code: int = 200, notice: str | None = None,
                       error: str | None = None) -> web.Response:
    tenant = _tenant(request)
    await _ready(request)
    index = request.app[INDEX]
    e = index.get(tenant, _entry_id(request))
    if e is None:
        return _html(views.error_page(404, NOT_FOUND, tenant=tenant, csrf=_csrf(request)), status=404)
    if notice is None and request.query.get("notice") == "replayed":
        notice = (f"Replayed: {int(request.query.get('sent', '0') or 0)} record(s) sent back into the pipeline, "
                  f"{int(request.query.get('already', '0') or 0)} already replayed before.")
    return _html(views.ticket_page(tenant, _csrf(request), e, status=_status(index, tenant, e), value=e.value(),
                                   case=e.case(), resolution=index.resolution(tenant, e), replay=index.replay_of(e),
                                   answerable=_answerable(e, tenant), notice=notice, error=error), status=status_code)


async def ticket_page(request: web.Request) -> web.Response:
    return await _ticket_view(request)


async def answer_form(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    await _ready(request)
    e = request.app[INDEX].get(tenant, _entry_id(request))
    if e is None:
        return _html(views.error_page(404, NOT_FOUND, tenant=tenant, csrf=_csrf(request)), status=404)
    text = (await request.post()).get("text")
    try:
        result = await _in_thread(request.app[RESOLVER].answer, tenant, e, text if isinstance(text, str) else "")
    except QueueError as exc:
        return await _ticket_view(request, status_code=exc.status, error=str(exc))
    raise web.HTTPSeeOther("/?" + views.query(notice="answered", cid=result["correlation_id"]))


async def replay_form(request: web.Request) -> web.StreamResponse:
    tenant = _tenant(request)
    await _ready(request)
    e = request.app[INDEX].get(tenant, _entry_id(request))
    if e is None:
        return _html(views.error_page(404, NOT_FOUND, tenant=tenant, csrf=_csrf(request)), status=404)
    try:
        report = await _in_thread(request.app[RESOLVER].replay, tenant, e)
    except QueueError as exc:
        return await _ticket_view(request, status_code=exc.status, error=str(exc))
    raise web.HTTPSeeOther(views.ticket_url(e) + "?" + views.query(notice="replayed", sent=report["replayed"],
                                                                   already=report["already"]))


# ---- JSON API ----------------------------------------------------------------------------------------------
async def api_queue(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    ready = await _ready(request)
    index = request.app[INDEX]
    rows = [_summary(index, tenant, e) for e in index.entries(tenant, **_filters(request))]
    return web.json_response({"tenant": tenant, "ready": ready, "entries": rows})


def _api_404() -> web.Response:
    return web.json_response({"error": "not found"}, status=404)


async def api_ticket(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    await _ready(request)
    index = request.app[INDEX]
    e = index.get(tenant, _entry_id(request))
    if e is None:
        return _api_404()
    body = _summary(index, tenant, e)
    body.update({"headers": dict(e.headers), "value": e.value(), "resolution": index.resolution(tenant, e),
                 "replay": index.replay_of(e), "answerable": body["status"] == "open" and _answerable(e, tenant)})
    return web.json_response(body, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json
    return json.dumps(obj, default=str, ensure_ascii=False)


async def api_answer(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    await _ready(request)
    e = request.app[INDEX].get(tenant, _entry_id(request))
    if e is None:
        return _api_404()
    try:
        payload = await request.json()
    except ValueError:
        return web.json_response({"error": "send JSON: {\"text\": \"...\"}"}, status=400)
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        return web.json_response({"error": "text must be a string"}, status=400)
    try:
        result = await _in_thread(request.app[RESOLVER].answer, tenant, e, text)
    except QueueError as exc:
        return _api_error(exc)
    return web.json_response(result)


def _api_error(exc: QueueError) -> web.Response:
    """A refused action as data: what happened (``error``) and a code a program reads (ALREADY_ANSWERED...)."""
    return web.json_response({"error": str(exc), "code": getattr(exc, "code", type(exc).__name__)},
                             status=exc.status)


async def api_replay(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    await _ready(request)
    e = request.app[INDEX].get(tenant, _entry_id(request))
    if e is None:
        return _api_404()
    try:
        report = await _in_thread(request.app[RESOLVER].replay, tenant, e)
    except QueueError as exc:
        return _api_error(exc)
    return web.json_response(report)


# ---- assembly ----------------------------------------------------------------------------------------------
def make_app(settings: Settings, tokens: Mapping[str, str], *, index: QueueIndex | None = None) -> web.Application:
    """The application. Its startup creates the resolution topic if missing and starts the queue index (unless
    one is given); its cleanup stops both."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_ANSWER_CHARS * 4 + 65536)
    app[AUTH] = Auth(tokens)
    app[SETTINGS] = settings
    own_index = index is None
    app[INDEX] = index or QueueIndex(settings.bootstrap)
    app[RESOLVER] = Resolver(settings.bootstrap, app[INDEX])

    async def startup(app: web.Application) -> None:
        await _in_thread(ensure_resolutions_topic, settings.bootstrap, settings.partitions)
        if own_index:
            app[INDEX].start()

    async def cleanup(app: web.Application) -> None:
        await _in_thread(app[RESOLVER].close)
        if own_index:
            await _in_thread(app[INDEX].close)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.on_response_prepare.append(_security_headers)
    t = r"/ticket/{topic:[A-Za-z0-9._-]+}/{partition:\d{1,6}}/{offset:\d{1,19}}"
    app.add_routes([
        web.get("/ui.css", css), web.get("/healthz", healthz),
        web.get("/login", login_form), web.post("/login", login), web.post("/logout", logout),
        web.get("/", queue_page), web.get(t, ticket_page), web.post(t + "/answer", answer_form),
        web.post(t + "/replay", replay_form),
        web.get("/api/queue", api_queue), web.get("/api" + t, api_ticket),
        web.post("/api" + t + "/answer", api_answer), web.post("/api" + t + "/replay", api_replay),
    ])
    return app


def serve(settings: Settings, host: str, port: int, tokens: Mapping[str, str]) -> None:
    """Run the queue UI on ``host:port`` until SIGINT/SIGTERM. ``tokens`` maps tenant -> login token."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_app(settings, tokens)
    log.info("queue UI for tenants %s on http://%s:%d/", ", ".join(sorted(tokens)), host, port)
    web.run_app(app, host=host, port=port, print=None, access_log=logging.getLogger("triage.ui.access"),
                access_log_format='%a "%r" %s %b %Tfs')
