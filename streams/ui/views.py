"""Server-rendered HTML for the queue UI. No JavaScript, no external assets; every value is escaped here."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from streams.ui.queue import DEAD_LETTER, ESCALATION, Entry

CSS = """
:root { --fg:#1d2430; --muted:#5f6b7a; --line:#dde2e8; --bg:#f6f7f9; --accent:#2357c6; --warn:#a3460b;
        --ok:#1f7a3d; --bad:#b42318; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg);
       background:var(--bg); }
header { display:flex; align-items:center; gap:1rem; padding:.6rem 1.2rem; background:#1d2430; color:#fff; }
header .brand { font-weight:600; letter-spacing:.02em; }
header .brand a { color:#fff; text-decoration:none; }
header .who { margin-left:auto; color:#c9d1dc; }
header form { margin:0; }
header button { background:transparent; color:#c9d1dc; border:1px solid #46505e; border-radius:4px; padding:.2rem .6rem;
                cursor:pointer; }
main { max-width:1200px; margin:1.2rem auto; padding:0 1.2rem; }
h1 { font-size:1.3rem; margin:.2rem 0 1rem; }
h2 { font-size:1.02rem; margin:1.6rem 0 .5rem; }
a { color:var(--accent); }
table { width:100%; border-collapse:collapse; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:.45rem .6rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f5; font-weight:600; font-size:.86rem; color:#3a4452; }
tr:hover td { background:#fafbfd; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:.85rem; }
.badge { display:inline-block; padding:0 .45rem; border-radius:9px; font-size:.78rem; font-weight:600;
         background:#e8ecf2; color:#3a4452; white-space:nowrap; }
.badge.escalation { background:#fdebd3; color:var(--warn); }
.badge.dead-letter { background:#fde2e1; color:var(--bad); }
.badge.replayed, .badge.answered, .badge.pass { background:#dcf3e3; color:var(--ok); }
.badge.fail { background:#fde2e1; color:var(--bad); }
.filters { display:flex; gap:.6rem; align-items:end; margin:0 0 1rem; flex-wrap:wrap; }
.filters label { display:flex; flex-direction:column; font-size:.8rem; color:var(--muted); }
select, input[type=password], textarea { font:inherit; padding:.35rem .45rem; border:1px solid #c4ccd6;
         border-radius:4px; background:#fff; }
button.primary { font:inherit; background:var(--accent); color:#fff; border:0; border-radius:4px;
                 padding:.42rem .9rem; cursor:pointer; }
button.secondary { font:inherit; background:#fff; color:var(--accent); border:1px solid var(--accent);
                   border-radius:4px; padding:.38rem .85rem; cursor:pointer; }
.card { background:#fff; border:1px solid var(--line); border-radius:6px; padding:.9rem 1rem; margin:.6rem 0; }
.grid { margin:0; display:grid; grid-template-columns: 10rem 1fr; gap:.3rem .8rem; }
.grid dt { color:var(--muted); }
.grid dd { margin:0; overflow-wrap:anywhere; }
pre { white-space:pre-wrap; overflow-wrap:anywhere; margin:0; }
.notice { padding:.6rem .9rem; border-radius:6px; margin:0 0 1rem; background:#dcf3e3; color:#114d26; }
.error { padding:.6rem .9rem; border-radius:6px; margin:0 0 1rem; background:#fde2e1; color:#7a1610; }
.muted { color:var(--muted); }
.empty { padding:2rem; text-align:center; color:var(--muted); background:#fff; border:1px solid var(--line); }
textarea { width:100%; min-height:9rem; }
ol.trail { margin:0; padding-left:1.4rem; }
ol.trail li { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:.85rem; }
.login { max-width:380px; margin:5rem auto; }
.login input { width:100%; margin:.4rem 0 .8rem; }
details summary { cursor:pointer; color:var(--accent); }
.tiles { display:flex; flex-wrap:wrap; gap:.6rem; margin:.6rem 0 1rem; }
.tile { border:1px solid #e2e8f0; border-radius:6px; padding:.4rem .7rem; min-width:8rem; }
.chart { margin:1rem 0; } .chart figcaption { font-weight:600; margin-bottom:.3rem; }
"""


def fmt_time(ms: int) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def ticket_url(e: Entry) -> str:
    return f"/ticket/{quote(e.topic)}/{e.partition}/{e.offset}"


def page(title: str, body: str, *, tenant: str | None = None, csrf: str | None = None) -> str:
    who = nav = ""
    if tenant:
        nav = '<a id="nav-insights" href="/insights">insights</a>'

        who = (f'<span class="who">tenant <b>{escape(tenant)}</b></span>'
               f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{escape(csrf or "")}">'
               f'<button type="submit">Log out</button></form>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{escape(title)} · triage</title>'
            f'<link rel="stylesheet" href="/ui.css"></head><body><header><span class="brand"><a href="/">triage · '
            f'human queue</a></span>{nav}{who}</header><main>{body}</main></body></html>')


def login_page(csrf: str, error: str | None = None) -> str:
    err = f'<div class="error">{escape(error)}</div>' if error else ""
    return page("Log in", f'<div class="login card"><h1>Log in</h1>{err}<form method="post" action="/login">'
                          f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
                          f'<label for="token">Tenant token</label><input id="token" name="token" type="password" '
                          f'autocomplete="current-password" required autofocus>'
                          f'<button class="primary" type="submit">Log in</button></form></div>')


def _options(name: str, label: str, values: Iterable[str], chosen: str | None) -> str:
    opts = ['<option value="">all</option>'] + [
        f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values]
    return f'<label>{escape(label)}<select name="{name}">{"".join(opts)}</select></label>'


def status_badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _pager(paging: dict[str, Any], params: dict[str, Any]) -> str:
    page_no, pages, total = paging["page"], paging["pages"], paging["total"]
    first = (page_no - 1) * paging["limit"] + 1
    last = min(total, page_no * paging["limit"])
    links = []
    if page_no > 1:
        links.append(f'<a id="prev-page" href="/?{escape(query(**params, page=page_no - 1))}">← newer</a>')
    if page_no < pages:
        links.append(f'<a id="next-page" href="/?{escape(query(**params, page=page_no + 1))}">older →</a>')
    shown = f"{first}–{last} of {total}" if last >= first else f"none of {total} on this page"
    return (f'<p class="muted pager">{shown} entr{"y" if total == 1 else "ies"}, newest first; page {page_no} of '
            f'{pages}. {" ".join(links)}</p>')


def queue_page(tenant: str, csrf: str, rows: list[tuple[Entry, str]], *, reasons: list[str], steps: list[str],
               reason: str | None, step: str | None, notice: str | None, loading: bool,
               paging: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> str:
    parts = ['<h1>Queue</h1>']
    if notice:
        parts.append(f'<div class="notice">{escape(notice)}</div>')
    if loading:
        parts.append('<div class="error">The queue is still loading from Kafka; this list may be incomplete.</div>')
    parts.append('<form class="filters" method="get" action="/">' + _options("reason", "Reason", reasons, reason)
                 + _options("step", "Step", steps, step)
                 + '<button class="secondary" type="submit">Filter</button> <a href="/">clear</a></form>')
    paging = paging or {"page": 1, "pages": 1, "limit": max(1, len(rows)), "total": len(rows)}
    if not rows:
        parts.append('<div class="empty">Nothing waiting for a person here.</div>')
        if paging["total"]:
            parts.append(_pager(paging, params or {}))
    else:
        trs = []
        for e, status in rows:
            url = ticket_url(e)
            trs.append(
                f'<tr data-id="{escape(e.id)}"><td class="mono">{escape(fmt_time(e.timestamp_ms))}</td>'
                f'<td class="mono"><a href="{url}">{escape(e.correlation_id or "(none)")}</a></td>'
                f'<td><a href="{url}">{escape(e.subject or "(no subject)")}</a></td>'
                f'<td><span class="badge {e.kind}">{escape(e.kind)}</span></td><td>{escape(e.step)}</td>'
                f'<td class="mono">{escape(e.reason)}</td><td>{e.attempt}</td><td>{status_badge(status)}</td></tr>')
        parts.append('<table id="queue"><thead><tr><th>Time</th><th>Correlation ID</th><th>Subject</th><th>Kind</th>'
                     '<th>Step</th><th>Reason</th><th>Attempt</th><th>Status</th></tr></thead><tbody>'
                     + "".join(trs) + '</tbody></table>')
        parts.append(_pager(paging, params or {}))
    return page("Queue", "".join(parts), tenant=tenant, csrf=csrf)


def _grid(pairs: Iterable[tuple[str, Any]]) -> str:
    items = "".join(f'<dt>{escape(k)}</dt><dd>{v}</dd>' for k, v in pairs if v not in (None, ""))
    return f'<dl class="grid">{items}</dl>'


def _text(v: Any) -> str:
    return escape("" if v is None else str(v))


def _case_sections(case: dict[str, Any]) -> list[str]:
    out: list[str] = []
    t = case.get("ticket") or {}
    out.append('<h2>Ticket</h2><div class="card">' + _grid([
        ("Subject", _text(t.get("subject"))), ("Ticket ID", _text(t.get("ticket_id"))),
        ("Customer", _text(t.get("customer_id"))), ("Channel", _text(t.get("channel"))),
        ("Received", _text(fmt_time(case.get("received_at_ms") or 0))),
        ("Flags", _text(", ".join(case.get("flags") or []))),
    ]) + f'<h2>Body</h2><pre id="ticket-body">{_text(t.get("body"))}</pre></div>')

    labels = case.get("labels") or {}
    rows = "".join(f'<tr><td>{escape(c)}</td><td class="mono">{_text(l.get("label"))}</td>'
                   f'<td>{float(l.get("confidence") or 0):.2f}</td><td class="mono">{_text(l.get("model"))}</td></tr>'
                   for c, l in sorted(labels.items()))
    missing = case.get("missing") or []
    why = case.get("missing_reasons") or {}
    miss = "".join(f'<tr><td>{escape(c)}</td><td colspan="3" class="mono">missing: {_text(why.get(c, "?"))}</td></tr>'
                   for c in missing)
    out.append('<h2>Classifications</h2>' + (
        f'<table><thead><tr><th>Classifier</th><th>Label</th><th>Confidence</th><th>Model</th></tr></thead>'
        f'<tbody>{rows}{miss}</tbody></table>' if rows or miss else '<p class="muted">None.</p>'))

    docs = case.get("documents") or []
    retrieval = case.get("retrieval")
    drows = "".join(f'<tr><td class="mono">{_text(d.get("doc_id"))}</td><td>{_text(d.get("title"))}</td>'
                    f'<td>{float(d.get("score") or 0):.3f}</td><td><details><summary>text</summary>'
                    f'<pre>{_text(d.get("body"))}</pre></details></td></tr>' for d in docs)
    out.append(f'<h2>Retrieved documents</h2><p class="muted">retrieval: {_text(retrieval or "not run")}</p>' + (
        f'<table><thead><tr><th>Doc</th><th>Title</th><th>Score</th><th></th></tr></thead><tbody>{drows}</tbody></table>'
        if docs else ""))

    reply = case.get("reply")
    out.append('<h2>Draft reply</h2>' + (
        f'<div class="card"><pre id="draft">{_text(reply)}</pre><p class="muted">writer: '
        f'{_text(case.get("writer_model") or "?")}; citations: {_text(", ".join(case.get("citations") or []) or "none")}'
        f'</p></div>' if reply else '<p class="muted">No draft was written.</p>'))

    history = case.get("gate_history") or ([case["gate"]] if case.get("gate") else [])
    grows = "".join(
        f'<tr><td>{i}</td><td>{float(g.get("score") or 0):.2f}</td><td>{status_badge("pass" if g.get("passed") else "fail")}'
        f'</td><td class="mono">{_text(", ".join(k for k, ok in sorted((g.get("checks") or {}).items()) if not ok) or "-")}'
        f'</td><td class="mono">{_text(g.get("model"))}</td></tr>' for i, g in enumerate(history, 1))
    out.append('<h2>Quality gate</h2>' + (
        f'<table><thead><tr><th>#</th><th>Score</th><th>Verdict</th><th>Failed checks</th><th>Judge</th></tr></thead>'
        f'<tbody>{grows}</tbody></table>' if history else '<p class="muted">Not gated.</p>'))

    trail = case.get("trail") or []
    out.append('<h2>Trail</h2><div class="card"><ol class="trail" id="trail">'
               + "".join(f'<li>{_text(line)}</li>' for line in trail) + '</ol>'
               + f'<p class="muted">model calls: {int(case.get("model_calls") or 0)}; tokens: {int(case.get("tokens") or 0)}'
               f'</p></div>')
    return out


def ticket_page(tenant: str, csrf: str, e: Entry, *, status: str, value: Any, case: dict[str, Any] | None,
                resolution: dict[str, Any] | None, replay: dict[str, Any] | None, answerable: bool,
                notice: str | None = None, error: str | None = None) -> str:
    parts = [f'<p><a href="/">← queue</a></p><h1>{escape(e.subject or "(no subject)")} '
             f'<span class="badge {e.kind}">{escape(e.kind)}</span> {status_badge(status)}</h1>']
    if notice:
        parts.append(f'<div class="notice" id="notice">{escape(notice)}</div>')
    if error:
        parts.append(f'<div class="error" id="error">{escape(error)}</div>')
    why: list[tuple[str, Any]] = [("Correlation ID", f'<code>{_text(e.correlation_id)}</code>'),
                                  ("Tenant", _text(e.tenant)), ("Queued", _text(fmt_time(e.timestamp_ms))),
                                  ("Entry", f'<code>{_text(e.id)}</code>'), ("Attempt", str(e.attempt)),
                                  ("Step", _text(e.step)), ("Reason", f'<b>{_text(e.reason)}</b>')]
    if e.kind == ESCALATION and case is not None:
        why.append(("Route reason", _text(case.get("route_reason"))))
    if e.kind == DEAD_LETTER:
        why += [("Error", f'<pre>{_text(e.headers.get("dlq.error"))}</pre>'),
                ("Source", f'<code>{_text(e.headers.get("dlq.source"))}</code>'),
                ("Tries", _text(e.headers.get("dlq.attempts")))]
    if resolution:
        why.append(("Answered", f'by hand; response <code>{_text(resolution.get("response", ""))}</code>'))
    if replay:
        why.append(("Replayed", f'as attempt {_text(replay.get("attempt", "?"))} into <code>'
                                f'{_text(replay.get("to", "?"))}</code>' if replay.get("to") else "yes"))
    parts.append('<h2>Why it is here</h2><div class="card">' + _grid(why) + '</div>')

    if case is not None:
        parts += _case_sections(case)
    else:
        shown = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
        if len(shown) > 20_000:
            shown = shown[:20_000] + f"\n... ({len(shown)} characters)"
        parts.append(f'<h2>Record</h2><div class="card"><pre id="record">{escape(shown)}</pre></div>')

    hdrs = "".join(f'<tr><td class="mono">{escape(k)}</td><td class="mono">{escape(v)}</td></tr>'
                   for k, v in sorted(e.headers.items()))
    parts.append(f'<h2>Headers</h2><details><summary>{len(e.headers)} headers</summary><table><tbody>{hdrs}'
                 f'</tbody></table></details>')

    base = ticket_url(e)
    hidden = f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
    # Neither button once the entry is decided: an answered entry is never replayed, a replayed one never
    # answered (the ledger refuses both anyway; this page may be a moment behind it).
    if resolution is None and replay is None and answerable:
        parts.append(f'<h2>Answer by hand</h2><form method="post" action="{base}/answer" class="card">{hidden}'
                     f'<textarea name="text" id="answer" required maxlength="20000" '
                     f'placeholder="Your reply to the customer"></textarea>'
                     f'<p><button class="primary" type="submit" id="send-answer">Send answer</button> '
                     f'<span class="muted">goes to tickets.responses as this ticket\'s response; the entry leaves '
                     f'the queue</span></p></form>')
    if e.kind == DEAD_LETTER and replay is None and resolution is None:
        parts.append(f'<h2>Replay</h2><form method="post" action="{base}/replay" class="card">{hidden}'
                     f'<p>Send the original bytes back into <code>{_text(e.source_topic or "?")}</code> as attempt '
                     f'{e.attempt + 1} (once: a second replay sends nothing).</p>'
                     f'<button class="secondary" type="submit" id="replay">Replay into {escape(e.replay_step)}</button>'
                     f'</form>')
    return page(e.subject or e.correlation_id, "".join(parts), tenant=tenant, csrf=csrf)


def error_page(status: int, message: str, *, tenant: str | None = None, csrf: str | None = None) -> str:
    return page(str(status), f'<h1>{status}</h1><div class="error">{escape(message)}</div>'
                             f'<p><a href="/">back to the queue</a></p>', tenant=tenant, csrf=csrf)


def query(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})
