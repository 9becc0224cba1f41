"""The page as a person uses it, in a real browser: Debian's Chromium driven by Playwright, against
`osteo serve` started by the test on the demo's registry (the champion classifier and localiser).

Sign in (OSTEO_AUTH_MODE=users, an account made with `osteo users add`), upload a synthetic DICOM, see
the proposed box, move it, add the self-assessment, predict, see the warning and the heat map, print,
switch language, sign out. The pictures go to a temporary folder, or to
docs/screenshots/ with OSTEO_UPDATE_SCREENSHOTS=1 (`make screenshots`): the README and the manual
show them.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.prefect_server import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update"]
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


USER, PASSWORD = "dr-browser", "a browser's long password"


def osteo(env: dict[str, str], *argv: str, stdin: str = "") -> str:
    done = subprocess.run([sys.executable, "-m", "osteo_cli.main", *argv], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def live(demo_run):
    """`osteo serve` in users mode (plain http on loopback: the cookie without Secure) on a free loopback port
    over the demo's stores, with an account for the browser and a token for the API; stopped at the end."""
    port = free_port()
    env = {**os.environ, "OSTEO_AUTH_MODE": "users", "OSTEO_AUTH_COOKIE_SECURE": "false"}
    osteo(env, "users", "add", USER, "--role", "screening", "--password-stdin", stdin=PASSWORD + "\n")
    token = json.loads(osteo(env, "tokens", "create", "browser-test", "--role", "screening", "--json"))["token"]
    proc = subprocess.Popen([sys.executable, "-m", "osteo_cli.main", "serve", "--port", str(port), "--json"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # readiness, not timing: the first answer after the models are loaded
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(base + "/api/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "osteo serve did not answer within 180 s"
            time.sleep(0.25)
        yield base, demo_run, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def shots_dir(tmp_path_factory) -> Path:
    if os.environ.get("OSTEO_UPDATE_SCREENSHOTS") == "1":
        out = REPO / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("screenshots")


def flagged_dicom(base: str, cohort: Path, token: str) -> Path:
    """A one-hip DICOM of an osteoporotic patient that the champion flags (the page's warning path) on the
    localiser's box and still flags with that box moved by the person's nudge in the browser (a few
    pixels): the demo champion is sensitive to small shifts, and a borderline film fell from 0.46 to
    0.24 under the nudge."""
    rows = [r for r in csv.DictReader((cohort / "truth.csv").open()) if r["expected_label"] == "1"
            and r["view"] == "hip" and r["expected_export"] == "1"]

    def predict(path: Path, box: str = "") -> dict:
        return httpx.post(base + "/api/v1/predict", files={"image": ("x", path.read_bytes())},
                          data={"box": box} if box else None, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}).json()

    for r in rows:
        path = cohort / r["file"]
        j = predict(path)
        if j.get("label") != 1 or not j.get("box"):
            continue
        x0, y0, x1, y1 = j["box"]
        nudged = [predict(path, f"{x0 + dx},{y0 + dy},{x1 + dx},{y1 + dy}") for dx, dy in ((6, 5), (3, 2))]
        if all(n.get("label") == 1 for n in nudged):
            return path
    raise AssertionError(f"the demo champion flags none of {len(rows)} osteoporotic hips under a nudged box")


def test_the_page_in_a_browser(live, tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    base, demo, token = live
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (make system-packages)"
    shots = shots_dir(tmp_path_factory)
    dicom = flagged_dicom(base, demo["cohort"], token)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900}, locale="zh-TW")
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: console_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        # sign in first: the page needs the screening role (the refusal itself is a 401 page, counted below)
        page.goto(base + "/signin")
        page.fill("#signin-name", USER)
        page.fill("#signin-password", PASSWORD)
        page.click("#signin-submit")
        expect(page.locator("#signed-in")).to_contain_text(USER)
        expect(page.locator("html")).to_have_attribute("lang", "zh-TW")
        expect(page.locator("#disclaimer")).to_contain_text("DEXA")
        page.screenshot(path=str(shots / "01-upload.png"), full_page=False)

        # the localiser's box is proposed on the rendered DICOM; the person moves it a little
        page.set_input_files("#image", str(dicom))
        expect(page.locator("#stage")).to_be_visible(timeout=60_000)
        box = page.locator("#box")
        expect(box).to_be_visible()
        before = box.bounding_box()
        page.mouse.move(before["x"] + before["width"] / 2, before["y"] + before["height"] / 2)
        page.mouse.down()
        page.mouse.move(before["x"] + before["width"] / 2 + 4, before["y"] + before["height"] / 2 + 3, steps=4)
        page.mouse.up()
        after = box.bounding_box()
        assert after["x"] > before["x"] and after["y"] > before["y"]
        moved = page.input_value("#box-field")
        assert len(moved.split(",")) == 4, moved
        page.locator("#box-card").screenshot(path=str(shots / "02-box.png"))

        # the self-assessment beside it: OSTA 0.2 x (48 - 72) = -4.8 -> high
        page.fill("#age", "72")
        page.fill("#weight", "48")
        page.check("input[name=iof_smoker][value=yes]")
        page.check("input[name=iof_parent_stooped][value=no]")
        page.fill("#reference", "clinic 3")
        page.click("#predict")
        expect(page.locator("#result")).to_be_visible(timeout=60_000)
        expect(page.locator("#warning")).to_be_visible()
        expect(page.locator("#heatmap")).to_be_visible()
        assert page.evaluate("document.getElementById('heatmap').naturalWidth") > 0
        expect(page.locator("#osta-result")).to_contain_text("-4")
        expect(page.locator("#iof-result")).to_be_visible()
        expect(page.locator("#model-line")).to_contain_text(f"版本 {demo['train']['model_version']}")
        page.screenshot(path=str(shots / "03-result.png"), full_page=True)

        # the printout: the result, the heat map, the answers, the notice and the typed reference; no forms
        page.emulate_media(media="print")
        expect(page.locator("nav")).to_be_hidden()
        expect(page.locator(".actions")).to_be_hidden()
        expect(page.locator(".reference-print")).to_contain_text("clinic 3")
        page.screenshot(path=str(shots / "05-print.png"), full_page=True)
        page.emulate_media(media="screen")

        # English, and the stand-alone self-assessment page
        page.click("#lang-switch")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#disclaimer")).to_contain_text("cannot rule osteoporosis out")
        page.goto(base + "/self-check")
        page.fill("#age", "65")
        page.fill("#weight", "55")  # 0.2 x (55 - 65) = -2: medium
        page.check("input[name=iof_smoker][value=no]")
        page.click("#selfcheck-submit")
        expect(page.locator("#osta-result")).to_contain_text("Medium risk")
        page.screenshot(path=str(shots / "04-selfcheck.png"), full_page=True)

        page.goto(base + "/manual")
        expect(page.locator("h2")).to_contain_text("User manual")
        page.click("#signout")
        expect(page.locator("#signin-form")).to_be_visible()
        assert page.context.request.get(base + "/").status == 401  # the session is over
        browser.close()
    assert not console_errors, console_errors  # CSP violations and script errors show up here
    for name in ("01-upload.png", "02-box.png", "03-result.png", "04-selfcheck.png", "05-print.png"):
        data = (shots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
