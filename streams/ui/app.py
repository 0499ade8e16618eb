"""The aiohttp application of the human queue: HTML pages for agents and a JSON API under ``/api/``.

Pages (session cookie from ``/login``)::

    GET  /                                      the tenant's queue (?reason=&step=&kind=&resolved=1&page=&limit=)
    GET  /ticket/{topic}/{partition}/{offset}   one entry: the whole trail
    POST /ticket/{topic}/{partition}/{offset}/answer   form field ``text``
    POST /ticket/{topic}/{partition}/{offset}/replay

API (``Authorization: Bearer <tenant token>``), same paths under ``/api/``: ``GET /api/queue``,
``GET /api/ticket/...``, ``POST /api/ticket/.../answer`` (JSON ``{"text": ...}``), ``POST /api/ticket/.../replay``.

Another tenant's entry is answered exactly like one that does not exist (404), on every path. Lists come in
pages (``?page=`` from 1, ``?limit=`` up to :data:`MAX_PAGE`, :data:`PAGE` by default); a query parameter that
is not what it should be gets a 400. Failed logins and wrong bearer tokens are rate-limited per client address
(and for all together): a 429 with ``Retry-After``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from streams.config import Settings
from streams.ui import views
from streams.kafka_io import KafkaFailure
from streams.ui.auth import COOKIE, LOGIN_COOKIE, LOGIN_FORM_TTL_S, Auth, FailureLimiter, Session
from streams.ui.queue import (DEAD_LETTER, ESCALATION, MAX_ANSWER_CHARS, Gone, NotAnswerable, QueueError, QueueIndex,
                              check_answerable, ensure_resolutions_topic)
from streams.insights.settings import InsightsSettings, load as load_insights
from streams.ui.resolve import Resolver

log = logging.getLogger("triage.ui")

AUTH = web.AppKey("auth", Auth)
INDEX = web.AppKey("index", QueueIndex)
RESOLVER = web.AppKey("resolver", Resolver)
SETTINGS = web.AppKey("settings", Settings)
LIMITER = web.AppKey("limiter", FailureLimiter)
INSIGHTS = web.AppKey("insights", InsightsSettings)
# Request storage keys (typed keys where this aiohttp has them: 3.12+).
_RequestKey = getattr(web, "RequestKey", None)
TENANT: Any = _RequestKey("tenant", str) if _RequestKey else "tenant"
SESSION: Any = _RequestKey("session", Session) if _RequestKey else "session"

PUBLIC = {"/login", "/ui.css", "/healthz"}
READY_WAIT_S = 15.0
NOT_FOUND = "No such ticket in your queue."
PAGE, MAX_PAGE = 50, 500
GONE = "This entry's record is no longer in Kafka (retention deleted it)."
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- auth --------------------------------------------------------------------------------------------------
def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request but the login page and the stylesheet names a tenant, or goes no further."""
    try:
        request.query  # parsed once here: a query string that cannot be read is the client's error
    except (ValueError, UnicodeError):
        return _bad_request(request, "the query string cannot be read")
    if request.path in PUBLIC:
        return await handler(request)
    auth = request.app[AUTH]
    if request.path.startswith("/api/"):
        limiter, client = request.app[LIMITER], _client(request)
        wait = limiter.retry_after(client)
        if wait:
            return _too_many(request, wait)
        tenant = auth.tenant_for_token(_bearer(request))
        if tenant is None:
            limiter.failed(client)  # a wrong bearer token is a guess like a wrong login
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
        form = await _form(request)
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


def _client(request: web.Request) -> str:
    """Whom failures are counted against: the peer address (behind a proxy, the proxy's; a forwarded-for header
    is not trusted, since any client can send one)."""
    return request.remote or "unknown"


def _too_many(request: web.Request, wait: int) -> web.Response:
    msg = f"Too many failed attempts; try again in {wait} s."
    headers = {"Retry-After": str(wait)}
    if request.path.startswith("/api/"):
        return web.json_response({"error": "too many failed attempts", "retry_after_s": wait}, status=429,
                                 headers=headers)
    return web.Response(status=429, text=views.error_page(429, msg), content_type="text/html", headers=headers)


def _bad_request(request: web.Request, message: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=400)
    return web.Response(status=400, text=views.error_page(400, message), content_type="text/html")


class BadQuery(Exception):
    """A query parameter or form that is not what it should be: a 400 saying which."""


async def _form(request: web.Request) -> Any:
    """The posted form; a body that is no form the client's error (400), never a 500."""
    try:
        return await request.post()
    except (ValueError, UnicodeError, AssertionError, KeyError) as exc:
        raise BadQuery(f"the form cannot be read ({type(exc).__name__})") from None


def _query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise BadQuery(f"{name} must be a whole number, not {raw[:40]!r}")
    value = int(raw)
    if value < low:
        raise BadQuery(f"{name} must be at least {low}")
    return value if high is None else min(value, high)


@web.middleware
async def bad_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadQuery as exc:
        return _bad_request(request, str(exc))


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
    if kind not in (None, ESCALATION, DEAD_LETTER):
        raise BadQuery(f"kind must be {ESCALATION} or {DEAD_LETTER}")
    resolved = q.get("resolved") or "0"
    if resolved not in ("0", "1", "true", "false", "yes", "no"):
        raise BadQuery("resolved must be 1 or 0")
    for name in ("reason", "step"):
        if len(q.get(name) or "") > 200:
            raise BadQuery(f"{name} is too long")
    return {"reason": q.get("reason") or None, "step": q.get("step") or None, "kind": kind,
            "include_resolved": resolved in ("1", "true", "yes")}


def _paging(request: web.Request) -> tuple[int, int]:
    """(page from 1, entries per page) of a list request."""
    return _query_int(request, "page", 1, low=1), _query_int(request, "limit", PAGE, low=1, high=MAX_PAGE)


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
        check_answerable(e, tenant)
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
    auth = request.app[AUTH]
    # The form's CSRF token is bound to a pre-login cookie (double submit): a page elsewhere can post a token to
    # /login but cannot read or set this cookie, so it cannot log a browser into its own tenant.
    nonce = request.cookies.get(LOGIN_COOKIE)
    fresh = auth.login_csrf(nonce) is None
    if fresh:
        nonce = auth.new_login_nonce()
    resp = _html(views.login_page(auth.login_csrf(nonce) or ""))
    if fresh:
        resp.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="Strict", path="/login", secure=request.secure,
                        max_age=LOGIN_FORM_TTL_S)
    return resp


async def login(request: web.Request) -> web.StreamResponse:
    auth, limiter, client = request.app[AUTH], request.app[LIMITER], _client(request)
    wait = limiter.retry_after(client)
    if wait:
        log.info("login from %s refused: too many failed attempts", client)
        return _too_many(request, wait)
    form = await _form(request)
    csrf = form.get("csrf")
    if not auth.check_login_csrf(request.cookies.get(LOGIN_COOKIE), csrf if isinstance(csrf, str) else None):
        return _html(views.error_page(403, "The login form expired; reload it and try again."), status=403)
    token = form.get("token")
    tenant = auth.tenant_for_token(token if isinstance(token, str) else None)
    if tenant is None:
        limiter.failed(client)
        log.info("failed login from %s", client)
        return _html(views.login_page(auth.login_csrf(request.cookies.get(LOGIN_COOKIE)) or "",
                                      "That token is not valid."), status=401)
    log.info("tenant %s logged in from %s", tenant, client)
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.set_cookie(COOKIE, auth.new_session(tenant), httponly=True, samesite="Strict", path="/",
                    secure=request.secure, max_age=8 * 3600)
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[AUTH].end_session(request[SESSION])  # over on the server: the cookie, replayed, is no session
    resp = web.Response(status=303, headers={"Location": "/login"})
    resp.del_cookie(COOKIE, path="/")
    return resp


def _page_of(index: QueueIndex, tenant: str, request: web.Request) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """(the entries of the requested page, the filters, the paging: page, limit, total, pages)."""
    f = _filters(request)
    page, limit = _paging(request)
    rows = index.entries(tenant, **f)
    pages = max(1, -(-len(rows) // limit))
    return rows[(page - 1) * limit:page * limit], f, {"page": page, "limit": limit, "total": len(rows),
                                                      "pages": pages}


async def queue_page(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    ready = await _ready(request)
    index = request.app[INDEX]
    shown, f, paging = _page_of(index, tenant, request)
    rows = [(e, _status(index, tenant, e)) for e in shown]
    everything = index.entries(tenant)
    notice = None
    if request.query.get("notice") == "answered":
        notice = f"Answered {request.query.get('cid', '')} by hand: the response is on tickets.responses and the " \
                 f"entry has left the queue."
    return _html(views.queue_page(tenant, _csrf(request), rows, reasons=sorted({e.reason for e in everything}),
                                  steps=sorted({e.step for e in everything}), reason=f["reason"], step=f["step"],
                                  notice=notice, loading=not ready, paging=paging,
                                  params={"reason": f["reason"], "step": f["step"], "kind": f["kind"],
                                          "resolved": "1" if f["include_resolved"] else None,
                                          "limit": paging["limit"] if paging["limit"] != PAGE else None}))


async def _opened(request: web.Request, e: Any) -> Any:
    """The entry with its record, read by offset off the event loop; None if it is gone."""
    try:
        return await _in_thread(request.app[INDEX].open, e)
    except Gone:
        return None
    except KafkaFailure as exc:
        log.warning("cannot read %s: %s", e.id, exc)
        raise web.HTTPServiceUnavailable(text="Kafka did not answer in time; try again.",
                                         headers={"Retry-After": "5"}) from None


async def _ticket_view(request: web.Request, *, status_code: int = 200, notice: str | None = None,
                       error: str | None = None) -> web.Response:
    tenant = _tenant(request)
    await _ready(request)
    index = request.app[INDEX]
    e = index.get(tenant, _entry_id(request))
    if e is None:
        return _html(views.error_page(404, NOT_FOUND, tenant=tenant, csrf=_csrf(request)), status=404)
    if notice is None and request.query.get("notice") == "replayed":
        notice = (f"Replayed: {_query_int(request, 'sent', 0)} record(s) sent back into the pipeline, "
                  f"{_query_int(request, 'already', 0)} already replayed before.")
    e = await _opened(request, e)
    if e is None:
        return _html(views.error_page(410, GONE, tenant=tenant, csrf=_csrf(request)), status=410)
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
def _insights_for(request: web.Request) -> tuple[str, str | None]:
    """The tenant whose figures are asked for, and a refusal if it is not the agent's own."""
    tenant = _tenant(request)
    asked = request.query.get("tenant") or tenant
    return tenant, (None if asked == tenant else f"You see only {tenant}'s figures, not {asked}'s.")


async def _insights_doc(request: web.Request, tenant: str) -> dict[str, Any]:
    from streams.insights import client
    return await _in_thread(client.snapshot, request.app[INSIGHTS], tenant)


async def insights_page(request: web.Request) -> web.Response:
    from streams.insights.client import Unavailable
    from streams.ui import dashboard
    tenant, refused = _insights_for(request)
    if refused:
        return _html(views.error_page(403, refused, tenant=tenant, csrf=_csrf(request)), 403)
    try:
        doc = await _insights_doc(request, tenant)
    except Unavailable as exc:
        return _html(dashboard.page(tenant, _csrf(request), None, str(exc)), 503)
    return _html(dashboard.page(tenant, _csrf(request), doc))


async def api_insights(request: web.Request) -> web.Response:
    from streams.insights.client import Unavailable
    tenant, refused = _insights_for(request)
    if refused:
        return web.json_response({"error": "forbidden", "detail": refused}, status=403)
    try:
        doc = await _insights_doc(request, tenant)
    except Unavailable as exc:
        return web.json_response({"error": "unavailable", "detail": str(exc)}, status=503)
    return web.json_response(doc, dumps=_dumps)


async def api_queue(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    ready = await _ready(request)
    index = request.app[INDEX]
    shown, _, paging = _page_of(index, tenant, request)
    rows = [_summary(index, tenant, e) for e in shown]
    return web.json_response({"tenant": tenant, "ready": ready, "entries": rows, **paging,
                              "next_page": paging["page"] + 1 if paging["page"] < paging["pages"] else None})


def _api_404() -> web.Response:
    return web.json_response({"error": "not found"}, status=404)


async def api_ticket(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    await _ready(request)
    index = request.app[INDEX]
    e = index.get(tenant, _entry_id(request))
    if e is None:
        return _api_404()
    e = await _opened(request, e)
    if e is None:
        return web.json_response({"error": "gone: the record is no longer in Kafka"}, status=410)
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
def make_app(settings: Settings, tokens: Mapping[str, str], *, index: QueueIndex | None = None,
             limiter: FailureLimiter | None = None) -> web.Application:
    """The application. Its startup creates the resolution topic if missing and starts the queue index (unless
    one is given); its cleanup stops both. ``limiter`` counts failed logins and bearer tokens (default: 5 per
    address, then one per 12 s; 100 for all addresses together, then one per second)."""
    app = web.Application(middlewares=[bad_query, guard], client_max_size=MAX_ANSWER_CHARS * 4 + 65536)
    app[AUTH] = Auth(tokens)
    app[LIMITER] = limiter or FailureLimiter()
    app[SETTINGS] = settings
    app[INSIGHTS] = load_insights()  # where the insights worker serves its tables
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
        web.get("/insights", insights_page), web.get("/api/insights", api_insights),
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
