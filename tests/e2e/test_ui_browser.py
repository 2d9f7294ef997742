"""The analyst workbench (``dedup ui``) as a real web app over a real service on loopback.

Over plain HTTP: a reader's session never gets seed content or a write, a forged or missing
session cookie gets the sign-in page. In a real headless Chromium (Debian's ``chromium``, driven
by Playwright, never a downloaded browser): sign in, search an uploaded picture, see the
neighbours' thumbnails load (blurred until clicked), remove a seed with a reason and find it in
the history; a screenshot is saved in the test's tmp dir.
"""

from __future__ import annotations

import http.cookiejar
import io
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from dedup.errors import PermissionDenied
from dedup.types import Item, Label
from tools.localserver import REPO, TOKENS, free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
ALICE = "alice-token"
CONFIG = f"""
[spaces."pdq"]
model = "pdq"
threshold = 0.67578125
min_quality = 50

[server]
tokens = {{ "{ALICE}" = {{ role = "analyst", name = "alice" }} }}
"""
BANK = ("coffee", "astronaut", "rocket", "chelsea")
UI_READY_S = 60


class UiProcess:
    """``python -m dedup.cli ui`` on a free loopback port, stopped at the end."""

    def __init__(self, target: str, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dedup.cli", "ui", "--target", target, "--port",
             str(self.port)], cwd=REPO, stdout=self._log, stderr=self._log,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
        deadline = time.monotonic() + UI_READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dedup ui exited with {self.proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"dedup ui not ready after {UI_READY_S} s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("ui", CONFIG)


@pytest.fixture(scope="module")
def bank(server, skimage_images, encode) -> dict[str, int]:
    """A few real pictures as seeds: name -> seed id."""
    with server.client("analyst") as analyst:
        results = analyst.add_seeds([Item(image=encode(skimage_images[n], "PNG")) for n in BANK],
                                    [Label("test.ui", 4)], source="UI-1", reason="ui test bank")
    return {name: r.seed_id for name, r in zip(BANK, results)}


@pytest.fixture(scope="module")
def ui(server, tmp_path_factory):
    proc = UiProcess(server.target, tmp_path_factory.mktemp("ui") / "ui.log")
    yield proc
    proc.close()


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects (to see them)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  self._NoRedirect())

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        """(status, headers, body) of one request; a redirect is returned, not followed."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, body, headers or {})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def sign_in(self, token: str) -> None:
        status, headers, _ = self.request("/login", {"token": token, "next": "/"})
        assert status == 303 and headers["Location"] == "/", status

    def csrf(self, path: str = "/") -> str:
        _, _, body = self.request(path)
        return re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()


def test_signed_out_and_forged_sessions_get_the_sign_in_page(ui, bank):
    anon = Browser(ui.url)
    for path in ("/", "/seeds", f"/seeds/{bank['coffee']}/thumb", "/ops"):
        status, headers, _ = anon.request(path)
        assert status == 303 and headers["Location"].startswith("/login"), path
    status, _, body = anon.request("/login", {"token": "not-a-token"})
    assert status == 401 and b"sign-in failed" in body
    alice = Browser(ui.url)
    alice.sign_in(ALICE)
    (cookie,) = list(alice.jar)
    assert cookie.has_nonstandard_attr("HttpOnly") and ALICE not in cookie.value
    cookie.value = cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB")
    status, headers, _ = alice.request("/")
    assert status == 303 and headers["Location"].startswith("/login")


def test_a_reader_never_gets_content_or_a_write(ui, server, bank):
    seed = bank["astronaut"]
    reader = Browser(ui.url)
    reader.sign_in(TOKENS["reader"])
    status, _, body = reader.request(f"/seeds/{seed}")
    assert status == 200 and b"test.ui" in body
    assert f'action="/seeds/{seed}/remove"'.encode() not in body  # no write forms
    assert f"/seeds/{seed}/thumb".encode() not in body and b"analysts only" in body
    for path in (f"/seeds/{seed}/thumb", f"/seeds/{seed}/content", "/ops"):
        assert reader.request(path)[0] == 403, path
    token = reader.csrf()
    for action in ("remove", "relabel", "restore"):
        status, _, _ = reader.request(f"/seeds/{seed}/{action}",
                                      {"csrf": token, "reason": "no", "labels": "a.b"})
        assert status == 403, action
    with server.client("reader") as client:
        assert not client.get_seed(seed).removed
        with pytest.raises(PermissionDenied):
            client.content(seed)
    # an analyst's write without the session's CSRF token, or from another site, is refused too
    alice = Browser(ui.url)
    alice.sign_in(ALICE)
    assert alice.request(f"/seeds/{seed}/remove", {"reason": "x"})[0] == 403
    assert alice.request(f"/seeds/{seed}/remove", {"reason": "x", "csrf": token})[0] == 403
    own = alice.csrf()
    for origin in ("http://evil.example", "null"):
        assert alice.request(f"/seeds/{seed}/remove", {"reason": "x", "csrf": own},
                             {"Origin": origin})[0] == 403
    assert alice.request("/login", {"token": ALICE}, {"Origin": "http://evil.example"})[0] == 403
    status, headers, body = alice.request(f"/seeds/{seed}/content")
    assert status == 200 and headers["Content-Type"] == "image/png" and body[:4] == b"\x89PNG"


def _edited_copy(img: Image.Image) -> bytes:
    """A re-post: re-encoded as JPEG quality 80 at 90% size."""
    out = io.BytesIO()
    img.resize((img.width * 9 // 10, img.height * 9 // 10)).save(out, "JPEG", quality=80)
    return out.getvalue()


def test_browser_search_shows_neighbours_then_remove_with_reason_shows_in_history(
        ui, bank, tmp_path, skimage_images):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium)")
    upload = tmp_path / "repost.jpg"
    upload.write_bytes(_edited_copy(skimage_images["coffee"]))
    shot = tmp_path / "workbench.png"
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(ui.url + "/")
            assert "/login" in page.url
            page.fill("input[name=token]", ALICE)
            page.click("button[type=submit]")
            page.wait_for_selector("text=alice")

            page.goto(ui.url + "/search")
            page.set_input_files("input[name=image]", str(upload))
            page.click("form.stack button[type=submit]")
            page.wait_for_selector(".pair")
            coffee = bank["coffee"]
            images = page.locator(".pair img")
            assert images.count() >= 2 * len(BANK) - 1
            for i in range(images.count()):  # every thumbnail really loads, not just its tag
                img = images.nth(i)
                img.scroll_into_view_if_needed()
                img.evaluate("el => el.complete && el.naturalWidth > 0 ? true : new Promise("
                             "(ok, fail) => { el.onload = () => ok(true); el.onerror = fail; })")
                assert img.evaluate("el => el.naturalWidth") > 0, img.get_attribute("src")
            first = page.locator(f".neighbour img[src^='/seeds/{coffee}/thumb']").first
            assert first.evaluate("el => el.naturalWidth") > 0
            best = page.locator(".pair").first  # the re-post's own seed comes first
            assert best.locator(f"a[href='/seeds/{coffee}']").count() == 1
            # blurred and grey until clicked (the wellness default), then shown
            assert "blur" in first.evaluate("el => getComputedStyle(el).filter")
            first.click()
            first.evaluate("el => new Promise(ok => { const check = () => "
                           "getComputedStyle(el).filter === 'none' ? ok(true) : "
                           "requestAnimationFrame(check); check(); })")
            assert first.evaluate("el => getComputedStyle(el).filter") == "none"

            page.click(f"a[href='/seeds/{coffee}']")
            page.wait_for_selector("form#remove")
            page.fill("form#remove input[name=reason]", "duplicate of CASE-77, cleaning up")
            page.click("form#remove button[type=submit]")
            page.wait_for_selector(".flash.ok")
            assert "removed" in page.inner_text(".flash.ok")
            assert page.inner_text(".state") == "removed"
            history = page.locator("table.ops tr.op-remove")
            assert history.count() == 1
            text = history.inner_text()
            assert "alice" in text and "duplicate of CASE-77, cleaning up" in text
            page.screenshot(path=str(shot), full_page=True)

            page.fill("form#restore input[name=reason]", "was right after all")
            page.click("form#restore button[type=submit]")
            page.wait_for_selector(".flash.ok")
            assert page.inner_text(".state") == "active"
            assert page.locator("table.ops tr.op-restore").count() == 1
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("DEDUP_UI_SCREENSHOT")  # optional copy for people to look at
    if keep:
        shutil.copy(shot, keep)
