"""The dashboard's Flask application: pages, actions, /metrics.

Pages are rendered on the server (Jinja2, autoescaped: every request name, error message and
body is escaped); the only script is the vendored htmx, which re-fetches the live part of a
page every ``refresh`` seconds. Every action is a POST with the session's CSRF token, asks
for a confirmation stating how many requests it touches, and is logged with who and when.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.wrappers import Response as BaseResponse

from s3q import layout
from s3q.dashboard import render
from s3q.dashboard.actions import (
    SYNC_LIMIT,
    Action,
    Confirmation,
    Confirmations,
    in_background,
)
from s3q.dashboard.failed import FailedIndex, FailedItem
from s3q.dashboard.metered import MeteredStore
from s3q.dashboard.security import (
    SESSION_LIFETIME,
    Credentials,
    csrf_ok,
    csrf_token,
    host_is_loopback,
)
from s3q.dashboard.snapshot import Snapshots
from s3q.layout import State
from s3q.pause import pause, resume
from s3q.queue import Queue
from s3q.records import CLOCK_MARGIN, RecordError
from s3q.store import NotFound, StoreError, StoreUnavailable, validate_key

__all__ = ["SYNC_LIMIT", "Action", "create_app"]

log = logging.getLogger("s3q.dashboard")
PER_PAGE = 50


def create_app(queue: Queue, credentials: Credentials, *, refresh: float = 5.0,
               metrics: CollectorRegistry | None = None, count_limit: int = 10_000,
               snapshots: Snapshots | None = None) -> Flask:
    """The application for ``queue`` (whose store should be a :class:`MeteredStore`, to
    show what each page costs). ``snapshots``: shared with the ``metrics`` collector."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secrets.token_bytes(32), SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict",
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=SESSION_LIFETIME),
                      MAX_CONTENT_LENGTH=16 * 1024 * 1024)
    snapshots = snapshots or Snapshots(queue, ttl=refresh, count_limit=count_limit)
    failed = FailedIndex(queue, limit=count_limit)
    actions: deque[Action] = deque(maxlen=50)
    confirmations = Confirmations()
    metered = queue.store if isinstance(queue.store, MeteredStore) else None
    app.jinja_env.filters.update(age=render.age, when=render.when)

    def record(what: str, **progress: Any) -> Action:
        action = Action(time.time(), g.who, what, **progress)
        actions.appendleft(action)
        log.warning("dashboard action by %s: %s", g.who, what,
                    extra={"event": "dashboard_action", "who": g.who, "action": what})
        return action

    @app.before_request
    def authenticate() -> BaseResponse | None:
        g.t0, g.requests0 = time.perf_counter(), metered.total() if metered else 0
        if not credentials.required and not host_is_loopback(request.host):
            # no credentials: loopback only, and no DNS rebinding (evil.test -> 127.0.0.1)
            abort(400, "this dashboard answers to loopback host names only")
        if request.endpoint in ("static", "login"):
            return None
        who = credentials.who(request)
        if who is None:
            if request.endpoint == "metrics_page" or credentials.password is not None:
                return Response("authentication required\n", 401,
                                {"WWW-Authenticate": 'Basic realm="s3q"'}
                                if credentials.password is not None else {})
            return redirect(url_for("login", next=request.full_path))
        g.who = who
        if request.method == "POST" and not csrf_ok(request):
            abort(400, "CSRF check failed: reload the page and try again")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update({
            "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
            "style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'",
            "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin"})
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.context_processor
    def common() -> dict[str, Any]:
        return {"csrf": csrf_token, "refresh": refresh, "queue_url": queue.store.url,
                "page_cost": _page_cost, "signed_in": credentials.required,
                "session_signed_in": "signed_in" in session}

    def _page_cost() -> str:
        used = (metered.total() - g.requests0) if metered else 0
        return f"{used} store request(s), {1000 * (time.perf_counter() - g.t0):.0f} ms"

    @app.get("/")
    def overview() -> str:
        snap = snapshots.get()
        return render_template("overview.html", snap=snap,
                               chart=render.chart(snap.throughput, now=snap.taken_at),
                               actions=list(actions)[:10])

    @app.get("/inflight")
    def inflight() -> str:
        return render_template("inflight.html", snap=snapshots.get(),
                               ttl=queue.config.lease_ttl + CLOCK_MARGIN)

    @app.get("/workers")
    def workers() -> str:
        return render_template("workers.html", snap=snapshots.get())

    @app.get("/failed")
    def failed_page() -> str:
        pattern = request.args.get("glob", "").strip() or "*"
        kind = request.args.get("type", "")
        page = request.args.get("page", "1")
        view = failed.view(pattern, kind, int(page) if page.isdigit() else 1, PER_PAGE)
        return render_template("failed.html", view=view, glob=pattern, kind=kind)

    @app.post("/failed/action")
    def failed_action() -> BaseResponse | str:
        form = request.form
        if form.get("confirmed") == "yes":
            # exactly what the confirmation page listed: (name, ETag) as shown then
            shown = confirmations.take(form.get("selection", ""))
            if shown is None:
                flash("this confirmation expired or was used already: nothing was done; "
                      "look at the failed requests again", "error")
                return redirect(url_for("failed_page", glob=form.get("glob", "*") or "*",
                                        type=form.get("type", "")))
            verb, scope, pattern, kind = shown.verb, shown.scope, shown.pattern, shown.kind
            items = list(shown.items)
            back = url_for("failed_page", glob=pattern, type=kind)
        else:
            # do = "requeue|purge" ":" "selected|matching", or ... ":one:" NAME (a row's
            # button)
            verb, _, rest = form.get("do", "").partition(":")
            scope, _, single = rest.partition(":")
            pattern, kind = form.get("glob", "*") or "*", form.get("type", "")
            if verb not in ("requeue", "purge") or scope not in ("one", "selected",
                                                                 "matching"):
                abort(400, "unknown action")
            names = [single] if scope == "one" else form.getlist("name")
            items = _chosen(failed, scope, names, pattern, kind)
            back = url_for("failed_page", glob=pattern, type=kind)
            if not items:
                flash("nothing to do: no failed request matches (any more)", "info")
                return redirect(back)
            selection = confirmations.add(Confirmation(
                time.monotonic(), verb, scope, pattern, kind, tuple(items)))
            return render_template("confirm.html", verb=verb, scope=scope, items=items,
                                   glob=pattern, kind=kind, selection=selection, back=back)
        run = failed.requeue if verb == "requeue" else failed.purge
        past = "requeued" if verb == "requeue" else "purged"
        what = (f"{verb} {len(items)} failed request(s)"
                + (f" matching {pattern!r}" if scope == "matching" else "")
                + (f" of type {kind}" if scope == "matching" and kind else "") + ": "
                + ", ".join(i.name for i in items[:10]) + (" ..." if len(items) > 10 else ""))
        if len(items) > SYNC_LIMIT:
            in_background(record(what, total=len(items), running=True), past,
                          lambda progress: run(items, progress), snapshots.invalidate)
            flash(f"{verb}ing {len(items)} request(s) in the background: its progress is "
                  "under Recent actions on the overview", "ok")
            return redirect(back)
        outcome = run(items)
        snapshots.invalidate()
        action = record(what, total=len(items),
                        handled=len(items) - len(outcome.undone.not_attempted))
        action.ended(outcome, past)
        flash(f"{past} {outcome.done} request(s)"
              + (f"; {outcome.changed} changed meanwhile and were left alone"
                 if outcome.changed else "")
              + (f"; {action.problem}" if action.problem else ""),
              "error" if action.problem else "ok")
        if action.problem:
            log.warning("dashboard action by %s: %s: %s", g.who, what, action.problem,
                        extra={"event": "dashboard_action_incomplete", "who": g.who,
                               "action": what, "problem": action.problem})
        return redirect(back)

    @app.get("/request/<path:name>")
    def request_page(name: str) -> str:
        name = _valid(name)
        return render_template("request.html", **_describe(queue, name))

    @app.get("/result/<path:name>")  # not /request/NAME/result: a request may be so named
    def result_download(name: str) -> Response:
        name = _valid(name)
        try:
            stream, info = queue.store.open(layout.key(layout.RESULTS, name))
        except NotFound:
            abort(404, "no result")
        filename = quote(name.rsplit("/", 1)[-1] + ".result", safe="")

        def body() -> Iterator[bytes]:
            with stream:
                while chunk := stream.read(64 * 1024):
                    yield chunk

        return Response(body(), mimetype="application/octet-stream", headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
            "Content-Length": str(info.size)})

    @app.post("/pause")
    def pause_queue() -> BaseResponse:
        reason = request.form.get("reason", "").strip()
        pause(queue.store, by=g.who, reason=reason)
        snapshots.invalidate()
        record("paused the queue" + (f" ({reason})" if reason else ""))
        flash("paused: workers stop claiming at their next poll; running jobs finish", "ok")
        return redirect(_back())

    @app.post("/resume")
    def resume_queue() -> BaseResponse:
        was = resume(queue.store)
        snapshots.invalidate()
        record("resumed the queue" if was else "resumed the queue (it was not paused)")
        flash("resumed: workers claim again at their next poll", "ok")
        return redirect(_back())

    @app.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | str:
        if request.method == "POST":
            if not csrf_ok(request):
                abort(400, "CSRF check failed: reload the page and try again")
            if credentials.sign_in(request.form.get("token", "")):
                session.permanent = True
                log.warning("dashboard sign-in from %s", request.remote_addr,
                            extra={"event": "dashboard_sign_in"})
                return redirect(_back(request.args.get("next", "")))
            log.warning("dashboard: wrong token from %s", request.remote_addr,
                        extra={"event": "dashboard_sign_in_failed"})
            flash("wrong token", "error")
        return render_template("login.html")

    @app.post("/logout")
    def logout() -> BaseResponse:
        credentials.sign_out()
        log.warning("dashboard sign-out from %s", request.remote_addr,
                    extra={"event": "dashboard_sign_out"})
        flash("signed out", "ok")
        return redirect(url_for("login"))

    @app.get("/metrics")
    def metrics_page() -> Response:
        if metrics is None:
            abort(404)
        return Response(generate_latest(metrics), mimetype=CONTENT_TYPE_LATEST)

    return app


def _chosen(failed: FailedIndex, scope: str, names: list[str], pattern: str,
            kind: str) -> list[FailedItem]:
    if scope == "matching":
        return failed.select(pattern, kind)
    return failed.current(_valid(n) for n in names[:1000])


def _valid(name: str) -> str:
    try:
        return validate_key(name)
    except ValueError:
        abort(404, "not a request name")


def _back(target: str = "") -> str:
    """Where to go after an action: the page it came from (this site only). Control
    characters are refused: browsers drop tabs and newlines from a URL, so that
    ``/<TAB>/evil.test`` (a sign-in link's ``?next=``) would lead to ``//evil.test``."""
    target = target or request.form.get("back", "") or "/"
    local = (target.startswith("/") and not target.startswith("//") and "\\" not in target
             and not any(ord(c) < 0x20 or c == "\x7f" for c in target))
    return target if local else "/"


def _describe(queue: Queue, name: str) -> dict[str, Any]:
    """Everything the request page shows (a HEAD per state, lease, error, result, body)."""
    states = []
    for state in State:
        try:
            states.append((state.value, queue.store.head(layout.key(state.prefix, name))))
        except NotFound:
            continue
    now = queue.store.now()
    lease_error = None
    try:
        lease = queue.lease(name)
    except StoreUnavailable:
        raise
    except StoreError as e:  # its own (denied): the page shows the rest
        lease, lease_error = None, " ".join(str(e).split())[:300]
    lease_view = None
    if lease is not None:
        record_, info = lease
        lease_age = max(0.0, now - info.last_modified)
        every = role.scans_every if (role := queue.scanner()) is not None else 0.0
        lease_view = {"record": record_, "age": lease_age,
                      "expires_in": queue.expires(info, record_.ttl) - now,
                      "expired": queue.is_expired(info, now, record_.ttl),
                      "overdue": queue.is_overdue(info, now, record_.ttl, every),
                      "last_error": (getattr(record_, "error", None) or {}).get("message")}
    try:
        error = queue.error_record(name)
        unreadable = None
    except StoreUnavailable:
        raise
    except (RecordError, StoreError) as e:  # (a store error of its own: denied, as its lease)
        error, unreadable = None, " ".join(str(e).split())[:300]
    try:
        result = queue.store.head(layout.key(layout.RESULTS, name))
    except NotFound:
        result = None
    body = body_error = None
    if states:
        where, info = states[0]
        try:
            stream, _ = queue.store.open(layout.key(f"{where}/", name))
            with stream:
                head = stream.read(render.PREVIEW_BYTES)
            body = render.preview(head, info.size)
        except NotFound:
            body = None
        except StoreUnavailable:
            raise
        except StoreError as e:  # its own (denied: written by the worker whose lease is)
            body_error = " ".join(str(e).split())[:300]
    return {"name": name, "states": states, "lease": lease_view, "error": error,
            "unreadable": unreadable, "lease_error": lease_error, "result": result,
            "body": body, "body_error": body_error,
            "attempts": error.attempts if error else lease[0].attempt if lease else None}
