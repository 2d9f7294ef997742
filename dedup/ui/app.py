"""The workbench web app: Starlette routes, Jinja2 templates, sessions, thumbnails.

Sessions: the sign-in form takes a token; the service names its holder (WhoAmI), and the token
is kept in this process's memory under a random session id. The browser holds only that id, in
a signed (itsdangerous), HttpOnly, SameSite=Lax cookie, so the token never goes back to the
browser and a stolen cookie dies with the session (sign-out, expiry, restart). Every form that
writes carries the session's CSRF token.

Security headers: a strict Content-Security-Policy (no inline script, images from here and
``data:`` only), no framing, no MIME sniffing. Seed content is served only to analysts and up
(the service refuses readers; the app checks the role first as well).
"""

from __future__ import annotations

import datetime as dt
import hmac
import io
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode, urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from dedup.client import DedupClient
from dedup.errors import (DedupError, InvalidArgument, InvalidItem, NotFound, Overloaded,
                          PermissionDenied, Unauthenticated)
from dedup.types import (ROLES, Label, OpFilter, OpKind, RemoveStatus, SeedFilter, check_labels)

log = logging.getLogger("dedup.ui")

HERE = Path(__file__).parent
COOKIE = "dedup_session"
SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 1000
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
THUMB_PX = 240
PAGE_SIZE = 48
_RANK = {role: i for i, role in enumerate(ROLES)}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; "
                               "style-src 'self'; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Session:
    """One signed-in analyst: their token (kept here only), name, role, CSRF token."""

    token: str
    name: str
    role: str
    client: DedupClient
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expires: float = field(default_factory=lambda: time.time() + SESSION_TTL_S)
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    query_thumb: bytes | None = None  # the last searched picture, shown beside its neighbours
    searches: int = 0

    def can(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


class Sessions:
    """Sessions by id, in memory, bounded in number and age."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, session: Session) -> str:
        with self._lock:
            self._expire()
            if len(self._by_id) >= MAX_SESSIONS:  # drop the oldest
                oldest = min(self._by_id, key=lambda k: self._by_id[k].expires)
                self._by_id.pop(oldest).client.close()
            sid = secrets.token_urlsafe(32)
            self._by_id[sid] = session
            return sid

    def get(self, sid: str) -> Session | None:
        with self._lock:
            self._expire()
            return self._by_id.get(sid)

    def drop(self, sid: str) -> None:
        with self._lock:
            session = self._by_id.pop(sid, None)
        if session is not None:
            session.client.close()

    def _expire(self) -> None:
        now = time.time()
        for sid in [k for k, s in self._by_id.items() if s.expires < now]:
            self._by_id.pop(sid).client.close()


class HttpError(Exception):
    """An error page: status code and a message for the analyst."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_ERROR_STATUS = ((Unauthenticated, 401), (PermissionDenied, 403), (NotFound, 404),
                 (InvalidItem, 400), (InvalidArgument, 400), (Overloaded, 503))


def _status_of(error: DedupError) -> int:
    return next((code for cls, code in _ERROR_STATUS if isinstance(error, cls)), 502)


# ------------------------------------------------------------------ helpers
def thumbnail(data: bytes, px: int = THUMB_PX) -> bytes:
    """A JPEG at most ``px`` on a side (upright, RGB) of image bytes."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (px * 2, px * 2))  # JPEG: decode at a reduced scale
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((px, px))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=80)
        return out.getvalue()


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def labels_text(labels) -> str:
    return ", ".join(f"{x.name}:{x.severity}" for x in labels)


def parse_day(text: str | None, end: bool = False) -> float | None:
    """A YYYY-MM-DD form value as unix seconds (its start, or its end with ``end``)."""
    if not text:
        return None
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise HttpError(400, f"bad date {text!r}: want YYYY-MM-DD") from None
    return (day + dt.timedelta(days=1 if end else 0)).timestamp()


def parse_labels_field(text: str) -> tuple[Label, ...]:
    """``a:3, b`` (commas, semicolons or spaces between labels) -> labels, by the label rule."""
    labels = []
    for part in text.replace(";", " ").replace(",", " ").split():
        name, sep, sev = part.rpartition(":")
        labels.append(Label(name, int(sev)) if sep and sev.isdigit() else Label(part))
    return check_labels(labels)


# ------------------------------------------------------------------ the app
def create_app(target: str, *, secret: str | None = None, secure_cookie: bool = False,
               root_cert: str | None = None,
               client_factory: Callable[[str], DedupClient] | None = None) -> Starlette:
    """The workbench for the service at ``target`` (TLS when ``root_cert`` is given).
    ``secret`` signs session cookies (a random one per process when None: sessions end with
    the process); ``secure_cookie`` marks the cookie HTTPS-only (behind a TLS proxy)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(when=when, labels_text=labels_text)
    signer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt="dedup-ui-session")
    sessions = Sessions()
    make_client = client_factory or (lambda token: DedupClient(target, token, timeout=60.0,
                                                               root_cert=root_cert))

    def page(request: Request, name: str, session: Session | None, status: int = 200,
             **context) -> Response:
        flashes = []
        if session is not None:
            flashes, session.flashes = session.flashes, []
        response = templates.TemplateResponse(
            request, name, {"session": session, "flashes": flashes, "target": target, **context},
            status_code=status)
        response.headers.update(HEADERS)
        return response

    def session_of(request: Request) -> tuple[str, Session] | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            sid = signer.loads(raw, max_age=SESSION_TTL_S)
        except BadSignature:
            return None
        session = sessions.get(sid)
        return (sid, session) if session is not None else None

    def handler(fn, need: str | None = "reader", write: bool = False):
        """Wrap a page: require a session with role ``need`` (None: none), check the CSRF
        token of writes, and turn errors into pages."""

        async def endpoint(request: Request) -> Response:
            found = session_of(request)
            sid, session = found if found else (None, None)
            if need is not None and session is None:
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            form = None
            try:
                _same_origin(request)
                if need is not None and not session.can(need):
                    raise HttpError(403, f"this needs the {need} role; you are signed in as "
                                    f"{session.name} ({session.role})")
                if request.method == "POST":
                    length = request.headers.get("content-length", "")
                    if length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 64 * 1024:
                        raise HttpError(413, f"the request is over {MAX_UPLOAD_BYTES} bytes")
                    form = await request.form(max_part_size=64 * 1024)
                if write:
                    given = str(form.get("csrf", "")) if form is not None else ""
                    if not hmac.compare_digest(given, session.csrf):
                        raise HttpError(403, "the form has expired; reload the page and retry")
                # the client blocks (gRPC): run it off the event loop
                return await run_in_threadpool(fn, request, session, form)
            except HttpError as e:
                return page(request, "error.html", session, status=e.status, message=e.message)
            except Unauthenticated as e:
                if sid is not None:
                    sessions.drop(sid)
                return page(request, "error.html", None, status=401,
                            message=f"the service no longer accepts your token: {e}")
            except DedupError as e:
                return page(request, "error.html", session, status=_status_of(e),
                            message=f"{type(e).__name__}: {e}")
            finally:
                if form is not None:
                    await form.close()

        return endpoint

    # ---------------------------------------------------------------- sign-in
    async def login(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "login.html", None, next=request.query_params.get("next", "/"))
        try:
            _same_origin(request)
        except HttpError as e:
            return page(request, "error.html", None, status=e.status, message=e.message)
        form = await request.form(max_part_size=16 * 1024)
        token = str(form.get("token", "")).strip()
        nxt = str(form.get("next", "/"))
        nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"
        if not token:
            return page(request, "login.html", None, status=400, next=nxt,
                        error="paste your token")
        client = make_client(token)
        try:
            name, role = await run_in_threadpool(client.whoami)
        except DedupError as e:
            client.close()
            status = 401 if isinstance(e, Unauthenticated) else _status_of(e)
            return page(request, "login.html", None, status=status, next=nxt,
                        error=f"sign-in failed: {e}")
        sid = sessions.create(Session(token, name, role, client))
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(COOKIE, signer.dumps(sid), max_age=SESSION_TTL_S, httponly=True,
                            samesite="lax", secure=secure_cookie, path="/")
        return response

    async def logout(request: Request) -> Response:
        found = session_of(request)
        if found is not None:
            form = await request.form(max_part_size=16 * 1024)
            if hmac.compare_digest(str(form.get("csrf", "")), found[1].csrf):
                sessions.drop(found[0])
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # ---------------------------------------------------------------- pages
    def overview(request: Request, s: Session, form) -> Response:
        stats = s.client.stats()
        recent = s.client.list_ops(page_size=10)[0] if s.can("analyst") else []
        return page(request, "overview.html", s, stats=stats, recent=recent)

    def seeds(request: Request, s: Session, form) -> Response:
        q = request.query_params
        where = SeedFilter(label=q.get("label") or None, source=q.get("source") or None,
                           added_by=q.get("actor") or None,
                           created_after=parse_day(q.get("since")),
                           created_before=parse_day(q.get("until"), end=True),
                           include_removed=q.get("removed") == "1")
        after = q.get("after", "")
        found, next_token = s.client.list_seeds(page_token=after if after.isdigit() else "",
                                                page_size=PAGE_SIZE, where=where)
        return page(request, "seeds.html", s, seeds=found, next_token=next_token,
                    q=dict(q.items()), more=_query(request, "after", next_token),
                    labels=sorted(s.client.stats()["labels"]))

    def seed(request: Request, s: Session, form) -> Response:
        seed_id = _seed_id(request)
        if s.can("analyst"):
            record, history = s.client.history(seed_id)
        else:
            record, history = s.client.get_seed(seed_id), None
        return page(request, "seed.html", s, seed=record, history=history)

    def thumb(request: Request, s: Session, form) -> Response:
        content = s.client.content(_seed_id(request))
        if not content.media_type.startswith("image/"):
            raise HttpError(404, "this seed has no picture")
        px = request.query_params.get("px", "")
        px = min(max(int(px), 32), 1024) if px.isdigit() else THUMB_PX
        try:
            jpeg = thumbnail(content.data, px)
        except (OSError, ValueError) as e:
            raise HttpError(415, f"the stored content is not a picture this page can show: {e}")
        return Response(jpeg, media_type="image/jpeg",
                        headers={**HEADERS, "Cache-Control": "private, max-age=300"})

    def content(request: Request, s: Session, form) -> Response:
        c = s.client.content(_seed_id(request))
        media = c.media_type if c.media_type.startswith(("image/", "text/plain")) else \
            "application/octet-stream"
        return Response(c.data, media_type=media, headers={
            **HEADERS, "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'",
            "Cache-Control": "private, max-age=300"})

    def write_done(seed_id: int, s: Session, kind: str, message: str) -> Response:
        s.flashes.append((kind, message))
        return RedirectResponse(f"/seeds/{seed_id}", status_code=303)

    def remove(request: Request, s: Session, form) -> Response:
        seed_id = _seed_id(request)
        reason = _reason(form)
        try:
            (result,) = s.client.remove_each([seed_id], reason=reason)
        except InvalidArgument as e:
            return write_done(seed_id, s, "error", str(e))
        text = {RemoveStatus.REMOVED: "removed", RemoveStatus.ALREADY_REMOVED:
                "was already removed", RemoveStatus.NOT_FOUND: "does not exist"}[result.status]
        return write_done(seed_id, s, "ok", f"seed {seed_id} {text}")

    def relabel(request: Request, s: Session, form) -> Response:
        seed_id = _seed_id(request)
        reason = _reason(form)
        try:
            labels = parse_labels_field(str(form.get("labels", "")))
            new = s.client.relabel(seed_id, labels, reason=reason)
        except (InvalidArgument, ValueError) as e:
            return write_done(seed_id, s, "error", str(e))
        return write_done(seed_id, s, "ok", f"seed {seed_id} relabelled: {labels_text(new.labels)}")

    def restore(request: Request, s: Session, form) -> Response:
        seed_id = _seed_id(request)
        reason = _reason(form)
        try:
            _, restored = s.client.restore(seed_id, reason=reason)
        except InvalidArgument as e:
            return write_done(seed_id, s, "error", str(e))
        return write_done(seed_id, s, "ok", f"seed {seed_id} restored: searchable again"
                          if restored else f"seed {seed_id} was not removed")

    def search(request: Request, s: Session, form) -> Response:
        if form is None:
            return page(request, "search.html", s, result=None)
        upload = form.get("image")
        text = str(form.get("text", "")).strip() or None
        pdq = str(form.get("pdq", "")).strip() or None
        image = None
        if isinstance(upload, UploadFile) and upload.filename:
            if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
                raise HttpError(413, f"the picture is over {MAX_UPLOAD_BYTES} bytes")
            image = upload.file.read(MAX_UPLOAD_BYTES + 1)
            if len(image) > MAX_UPLOAD_BYTES:
                raise HttpError(413, f"the picture is over {MAX_UPLOAD_BYTES} bytes")
        if image is None and text is None and pdq is None:
            return page(request, "search.html", s, status=400, result=None,
                        error="upload a picture, paste a text or a PDQ hash")
        try:
            result = s.client.lookup(image=image, text=text, pdq=pdq, top_k=10)
        except (InvalidItem, InvalidArgument) as e:
            return page(request, "search.html", s, status=400, result=None, error=str(e))
        s.query_thumb, s.searches = None, s.searches + 1
        if image is not None:
            try:
                s.query_thumb = thumbnail(image)
            except (OSError, ValueError, Image.DecompressionBombError):
                s.query_thumb = None
        query_thumb = f"/search/query.jpg?n={s.searches}" if s.query_thumb else None
        seeds = {n.seed_id: None for n in result.neighbors}
        return page(request, "search.html", s, result=result, query_thumb=query_thumb,
                    query_text=text, query_pdq=pdq, seeds=_seeds(s, seeds))

    def query_image(request: Request, s: Session, form) -> Response:
        if s.query_thumb is None:
            raise HttpError(404, "no picture searched yet")
        return Response(s.query_thumb, media_type="image/jpeg",
                        headers={**HEADERS, "Cache-Control": "private, max-age=3600"})

    def ops(request: Request, s: Session, form) -> Response:
        q = request.query_params
        kinds = tuple(OpKind[k.upper()] for k in q.getlist("kind")
                      if k.upper() in OpKind.__members__)
        seed_id = q.get("seed", "")
        where = OpFilter(actor=q.get("actor") or None, kinds=kinds, label=q.get("label") or None,
                         since=parse_day(q.get("since")), until=parse_day(q.get("until"), end=True),
                         seed_id=int(seed_id) if seed_id.isdigit() else None)
        before = q.get("before", "")
        entries, next_token = s.client.list_ops(where, page_token=before if before.isdigit()
                                                else "", page_size=100)
        return page(request, "ops.html", s, ops=entries, next_token=next_token,
                    q=dict(q.items()), more=_query(request, "before", next_token),
                    kinds=[k.name.lower() for k in OpKind], chosen={k.name.lower() for k in kinds})

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/", handler(overview)),
        Route("/seeds", handler(seeds)),
        Route("/seeds/{seed_id:int}", handler(seed)),
        Route("/seeds/{seed_id:int}/thumb", handler(thumb, need="analyst")),
        Route("/seeds/{seed_id:int}/content", handler(content, need="analyst")),
        Route("/seeds/{seed_id:int}/remove", handler(remove, "analyst", write=True),
              methods=["POST"]),
        Route("/seeds/{seed_id:int}/relabel", handler(relabel, "analyst", write=True),
              methods=["POST"]),
        Route("/seeds/{seed_id:int}/restore", handler(restore, "analyst", write=True),
              methods=["POST"]),
        Route("/search", handler(search), methods=["GET", "POST"]),
        Route("/search/query.jpg", handler(query_image)),
        Route("/ops", handler(ops, need="analyst")),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes)


def _query(request: Request, cursor: str, value: str) -> str:
    """This page's query string with the page cursor set to ``value``."""
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k != cursor and v]
    return urlencode(pairs + [(cursor, value)])


def _same_origin(request: Request) -> None:
    """Refuse a POST a browser sent from another site (a second guard beside the CSRF token
    and the SameSite cookie)."""
    origin = request.headers.get("origin")
    if request.method == "POST" and origin is not None and (
            origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")):
        raise HttpError(403, "cross-site form posts are refused")


def _seed_id(request: Request) -> int:
    return int(request.path_params["seed_id"])


def _reason(form) -> str:
    reason = str(form.get("reason", "")).strip() if form is not None else ""
    if not reason:
        raise HttpError(400, "say why: a reason is required for every change")
    return reason


def _seeds(s: Session, ids: dict[int, None]) -> dict:
    """The seed records of the given ids that still exist (neighbours' details)."""
    out = {}
    for seed_id in ids:
        try:
            out[seed_id] = s.client.get_seed(seed_id)
        except NotFound:
            continue
    return out


def serve(target: str, host: str = "127.0.0.1", port: int = 8080, *, secret: str | None = None,
          secure_cookie: bool = False, root_cert: str | None = None,
          log_level: str = "info") -> None:
    """Run the workbench with uvicorn until interrupted."""
    import uvicorn

    app = create_app(target, secret=secret, secure_cookie=secure_cookie, root_cert=root_cert)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
