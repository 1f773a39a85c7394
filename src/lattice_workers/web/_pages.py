"""The web view's HTML: plain server-rendered pages, readable without JavaScript.

Every value from the board or a run is escaped here (``_e``); no template engine, no
build step. The live parts are a few lines of script at the bottom of each page that
listen to a server-sent event stream and swap in a fresh fragment from the server, so
that the HTML has one author: these functions.
"""

from __future__ import annotations

import datetime
import html
import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from lattice_workers.protocol._messages import RunInfo, WorkerInfo

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
header a{color:#9cc3ff}main{padding:14px 18px}
.board{display:flex;gap:12px;align-items:flex-start;overflow-x:auto}
.col{min-width:170px;max-width:260px;flex:1;background:#e9ecf1;border-radius:6px;padding:8px}
.col h2{font-size:13px;text-transform:uppercase;margin:2px 4px 8px;color:#555}
.card{background:#fff;border-radius:5px;padding:8px;margin-bottom:8px;box-shadow:0 1px 2px #0002}
.card .id{color:#777;font-size:12px}.runs{margin:6px 0 0;padding:0;list-style:none;font-size:12px}
.state{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;background:#ddd}
.state.running,.state.preparing{background:#cde8ff}.state.queued{background:#fff1c2}
.state.completed{background:#d3f5d6}.state.failed{background:#ffd6d3}
.state.stopping{background:#ffe2c2}
table{border-collapse:collapse}td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
pre{background:#111;color:#ddd;padding:10px;border-radius:5px;overflow:auto;max-height:70vh}
form.inline{display:inline}select,button{font:inherit}.error{color:#a00}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(run: RunInfo) -> str:
    seconds = run.duration_seconds
    if seconds is None and run.started_at:
        seconds = time.time() - run.started_at
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def page(title: str, body: str, token: str, *, script: str = "") -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><strong>Lattice Workers</strong><a href='/?token={quote(token)}'>board</a>"
        f"<span>{_e(title)}</span></header><main>{body}</main>"
        f"{'<script>' + script + '</script>' if script else ''}</body></html>"
    )


def run_link(run: RunInfo, token: str) -> str:
    return f"<a href='/runs/{quote(run.run_id)}?token={quote(token)}'>{_e(run.worker)}</a>"


def state(run: RunInfo) -> str:
    return f"<span class='state {_e(run.state)}'>{_e(run.state)}</span>"


def board_fragment(
    statuses: list[str],
    tasks: list[dict[str, Any]],
    runs: list[RunInfo],
    workers: list[WorkerInfo],
    token: str,
) -> str:
    """The columns of the board: each task with its live run and its last runs."""
    by_task: dict[str, list[RunInfo]] = {}
    for run in runs:
        by_task.setdefault(run.task_id, []).append(run)
    runnable = [w.name for w in workers if w.valid]
    columns = {s: [] for s in statuses}  # type: dict[str, list[str]]
    for task in tasks:
        columns.setdefault(str(task.get("status")), []).append(
            _card(task, by_task.get(str(task["id"]), []), runnable, token)
        )
    return "<div class='board' id='board'>" + "".join(
        f"<section class='col'><h2>{_e(s)} ({len(cards)})</h2>{''.join(cards)}</section>"
        for s, cards in columns.items()
        if cards or s in statuses
    ) + "</div>"


def _card(task: dict[str, Any], runs: list[RunInfo], workers: list[str], token: str) -> str:
    label = task.get("short_id") or task["id"]
    live = [r for r in runs if r.state not in ("completed", "failed")]
    ended = sorted(
        (r for r in runs if r.state in ("completed", "failed")),
        key=lambda r: r.ended_at or 0,
        reverse=True,
    )[:3]
    items = [
        f"<li data-run='{_e(r.run_id)}'>{state(r)} {run_link(r, token)} {duration(r)}</li>"
        for r in [*live, *ended]
    ]
    start = ""
    if workers:
        options = "".join(f"<option>{_e(w)}</option>" for w in workers)
        start = (
            f"<form class='inline' method='post' action='/runs'>"
            f"<input type='hidden' name='token' value='{_e(token)}'>"
            f"<input type='hidden' name='task' value='{_e(label)}'>"
            f"<select name='worker' aria-label='worker'>{options}</select> "
            f"<button type='submit' data-start='{_e(label)}'>run</button></form>"
        )
    return (
        f"<div class='card' data-task='{_e(label)}'><div class='id'>{_e(label)}</div>"
        f"<div>{_e(task.get('title'))}</div>"
        f"<ul class='runs'>{''.join(items)}</ul>{start}</div>"
    )


#: ``latest``: one redraw at a time, and one more after it when a change came meanwhile:
#: two fetches in flight can answer out of order, and the older answer, drawn last,
#: would leave a stale page that no later event corrects. ``follow``: a page's one live
#: stream, closed when the page is hidden (a browser keeps a page for its back button,
#: streams open, and opens at most six connections to one host), the page reloaded
#: when it is shown again from there.
LIVE_SCRIPT = """
function latest(draw) {
  let busy = false, again = false;
  return async () => {
    if (busy) { again = true; return; }
    busy = true;
    try { do { again = false; await draw(); } while (again); } finally { busy = false; }
  };
}
function follow(url) {
  const source = new EventSource(url);
  addEventListener('pagehide', () => source.close());
  addEventListener('pageshow', (e) => { if (e.persisted) location.reload(); });
  return source;
}
"""

BOARD_SCRIPT = LIVE_SCRIPT + """
const token = new URLSearchParams(location.search).get('token') || '';
const refresh = latest(async () => {
  const r = await fetch('/fragments/board?token=' + encodeURIComponent(token));
  if (r.ok) document.getElementById('board').outerHTML = await r.text();
});
// Redraw on each change, and once when the stream opens (a change between drawing the
// page and subscribing is seen then); "current" events repeat what is already drawn.
const board = follow('/events?token=' + encodeURIComponent(token));
board.onopen = refresh;
board.onmessage = (m) => { if (JSON.parse(m.data).kind !== 'current') refresh(); };
"""


def run_fragment(run: RunInfo, token: str) -> str:
    """A run's record, as a table, with a cancel button while it lives."""
    rows: Iterable[tuple[str, Any]] = [
        ("run", run.run_id),
        ("worker", run.worker),
        ("task", run.short_id or run.task_id),
        ("state", None),
        ("attempt", run.attempt),
        ("commit", run.commit_sha),
        ("created", when(run.created_at)),
        ("started", when(run.started_at)),
        ("ended", when(run.ended_at)),
        ("duration", duration(run)),
        ("exit code", run.exit_code),
        ("reason", run.reason),
        ("error", run.error),
        ("requested by", run.requested_by),
    ]
    body = "".join(
        f"<tr><th>{_e(k)}</th><td>{state(run) if k == 'state' else _e(v)}</td></tr>"
        for k, v in rows
        if k == "state" or v not in (None, "")
    )
    if run.result is not None:
        body += (
            f"<tr><th>result</th><td><pre>{_e(json.dumps(run.result, indent=2))}</pre></td></tr>"
        )
    cancel = ""
    if run.state not in ("completed", "failed"):
        cancel = (
            f"<form method='post' action='/runs/{quote(run.run_id)}/cancel'>"
            f"<input type='hidden' name='token' value='{_e(token)}'>"
            f"<button type='submit' id='cancel'>cancel</button></form>"
        )
    return f"<div id='record'><table>{body}</table>{cancel}</div>"


def artifacts_list(artifacts: list[dict[str, Any]], token: str) -> str:
    if not artifacts:
        return ""
    items = "".join(
        f"<li><a href='/artifacts/{quote(str(a.get('id')))}?token={quote(token)}'>"
        f"{_e(a.get('title') or a.get('id'))}</a> ({_e(a.get('role'))})</li>"
        for a in artifacts
        if not a.get("missing")
    )
    return f"<h3>Artifacts of the task</h3><ul>{items}</ul>"


RUN_SCRIPT = LIVE_SCRIPT + """
const token = new URLSearchParams(location.search).get('token') || '';
const runId = document.body.querySelector('[data-run-id]').dataset.runId;
const log = document.getElementById('log');
const q = (extra) => '?token=' + encodeURIComponent(token) + extra;
const redraw = latest(async () => {
  const r = await fetch('/fragments/runs/' + runId + q(''));
  if (r.ok) document.getElementById('record').outerHTML = await r.text();
});
const live = follow('/runs/' + runId + '/live' + q('&offset=' + log.dataset.offset));
live.onopen = redraw;  // a change between drawing the page and subscribing
live.addEventListener('log', (m) => {
  log.textContent += JSON.parse(m.data);
  log.scrollTop = 1e9;
});
live.addEventListener('change', (m) => { if (JSON.parse(m.data).kind !== 'current') redraw(); });
// Sent once the run has ended and its log is read to the end: the last redraw.
live.addEventListener('end', () => { live.close(); redraw(); });
"""


def run_page(
    run: RunInfo,
    log: bytes,
    artifacts: list[dict[str, Any]],
    token: str,
    kept: bytes | None = None,
) -> str:
    work = ""
    if kept:
        work = (
            "<h3>Kept work</h3><p>under <code>refs/lattice/runs/</code>: take it with "
            f"<code>lattice worker apply {_e(run.run_id)} --branch NAME</code></p>"
            f"<pre id='kept'>{_e(kept.decode('utf-8', 'replace'))}</pre>"
        )
    body = (
        f"<div data-run-id='{_e(run.run_id)}'></div>"
        f"<h2>{_e(run.worker)} on {_e(run.short_id or run.task_id)}</h2>"
        f"{run_fragment(run, token)}"
        f"<h3>Log</h3><pre id='log' data-offset='{len(log)}'>"
        f"{_e(log.decode('utf-8', 'replace'))}</pre>"
        f"{work}{artifacts_list(artifacts, token)}"
    )
    return page(f"{run.worker} {run.run_id}", body, token, script=RUN_SCRIPT)


def error_page(code: str, message: str, token: str) -> str:
    return page("error", f"<p class='error'><strong>{_e(code)}</strong>: {_e(message)}</p>", token)
