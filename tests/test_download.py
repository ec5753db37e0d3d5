"""vidclass.media.download against a real local HTTP server (fixture clips, errors, flaky endpoints)."""
import http.server
import threading
import time
from pathlib import Path

import pytest

from vidclass.media.download import DownloadCancelled, DownloadError, fetch

FIXTURES = Path(__file__).parent / "fixtures"
CLIP = FIXTURES / "gaming_supertux_4.mp4"


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict = {}

    def log_message(self, *_):
        pass

    def _send(self, status, body=b"", ctype="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/clip.mp4":
            self._send(200, CLIP.read_bytes(), "video/mp4")
        elif path == "/untyped":
            self._send(200, CLIP.read_bytes(), "application/octet-stream")
        elif path == "/flaky.mp4":      # two 503s, then the clip
            if self.hits[path] <= 2:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, CLIP.read_bytes(), "video/mp4")
        elif path == "/always503.mp4":
            self._send(503, b"down", "text/plain")
        elif path == "/notes.txt":
            self._send(200, b"just text\n", "text/plain; charset=utf-8")
        elif path == "/redirect":       # a relative redirect to the clip
            self.send_response(302)
            self.send_header("Location", "/clip.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/trickle.mp4":    # the headers, then one byte a second
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(CLIP.stat().st_size))
            self.end_headers()
            try:
                for byte in CLIP.read_bytes()[:60]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass
        elif path == "/cut.mp4":        # half the announced body, then the connection closes
            data = CLIP.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif path == "/page.html":
            self._send(200, b"<html><body><p>no video here</p></body></html>", "text/html")
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_direct_media_is_streamed_byte_for_byte(server, tmp_path):
    path = fetch(f"{server}/clip.mp4?token=1", tmp_path)
    assert path.read_bytes() == CLIP.read_bytes() and path.suffix == ".mp4"
    untyped = fetch(f"{server}/untyped", tmp_path / "u")
    assert untyped.read_bytes() == CLIP.read_bytes()


def test_transient_errors_are_retried_with_backoff(server, tmp_path):
    _Handler.hits.pop("/flaky.mp4", None)
    path = fetch(f"{server}/flaky.mp4", tmp_path, retries=3, backoff_s=0.05)
    assert path.read_bytes() == CLIP.read_bytes()
    assert _Handler.hits["/flaky.mp4"] == 3
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/always503.mp4", tmp_path / "x", retries=1, backoff_s=0.01)
    assert not err.value.permanent and "503" in str(err.value)


def test_permanent_errors_fail_at_once(server, tmp_path):
    _Handler.hits.pop("/missing.mp4", None)
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/missing.mp4", tmp_path, retries=3, backoff_s=0.01)
    assert err.value.code == "not_found" and err.value.permanent
    assert _Handler.hits["/missing.mp4"] == 1
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/notes.txt", tmp_path)
    assert err.value.code == "not_a_video" and "text/plain" in str(err.value)
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/clip.mp4", tmp_path, max_bytes=1000)
    assert err.value.code == "too_large"
    assert not list(tmp_path.glob("video.*")), "a refused download must leave no file behind"
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/clip.mp4", tmp_path, max_seconds=2)     # the clip lasts longer
    assert err.value.code == "too_long" and err.value.permanent
    assert not list(tmp_path.glob("video.*"))
    with pytest.raises(DownloadError) as err:
        fetch("ftp://example.org/a.mp4", tmp_path)
    assert err.value.code == "bad_url"


def test_a_page_without_video_goes_through_yt_dlp_and_fails_clearly(server, tmp_path):
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/page.html", tmp_path, retries=0)
    assert err.value.permanent and err.value.code == "unsupported_url"


def test_redirects_are_followed_and_loops_refused(server, tmp_path):
    path = fetch(f"{server}/redirect", tmp_path / "a", retries=0)
    assert path.read_bytes() == CLIP.read_bytes() and path.suffix == ".mp4"
    with pytest.raises(DownloadError, match="more than 5 redirects") as err:
        fetch(f"{server}/loop", tmp_path / "b", retries=0)
    assert err.value.code == "bad_url"


def test_block_private_refuses_before_any_request(server, tmp_path):
    before = dict(_Handler.hits)
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/clip.mp4", tmp_path, retries=0, block_private=True)
    assert err.value.code == "blocked_url" and "ALLOWED_PRIVATE_NETWORKS" in str(err.value)
    assert _Handler.hits == before              # the server never saw the request
    # Off (the default), the same URL downloads.
    assert fetch(f"{server}/clip.mp4", tmp_path, retries=0).stat().st_size == CLIP.stat().st_size


def test_total_deadline_stops_a_trickling_server(server, tmp_path):
    started = time.monotonic()
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/trickle.mp4", tmp_path, retries=3, timeout=30, deadline_s=2)
    elapsed = time.monotonic() - started
    assert err.value.code == "download_timeout" and "DOWNLOAD_DEADLINE_S" in str(err.value)
    assert elapsed < 6, f"took {elapsed:.1f} s: the deadline did not cut the slow read"
    assert not list(tmp_path.glob("video.*"))


def test_cancel_stops_a_download_promptly(server, tmp_path):
    cancelled = threading.Event()
    threading.Timer(1.0, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(DownloadCancelled):
        fetch(f"{server}/trickle.mp4", tmp_path, retries=3, timeout=30, cancelled=cancelled)
    assert time.monotonic() - started < 4


def test_connection_cut_mid_body_is_a_retryable_network_error(server, tmp_path):
    _Handler.hits.pop("/cut.mp4", None)
    with pytest.raises(DownloadError) as err:
        fetch(f"{server}/cut.mp4", tmp_path, retries=1, backoff_s=0.01)
    assert err.value.code == "network_error" and not err.value.permanent, err.value
    assert str(err.value).startswith("The connection to 127.0.0.1:") and "cut" in str(err.value)
    assert _Handler.hits["/cut.mp4"] == 2            # retried once
    assert not list(tmp_path.glob("video.*"))


def test_network_errors_are_plain_sentences(tmp_path):
    with pytest.raises(DownloadError) as err:
        fetch("http://127.0.0.1:1/video.mp4", tmp_path, retries=0)
    assert str(err.value) == "The server at 127.0.0.1:1 refused the connection."
    assert err.value.code == "network_error" and not err.value.permanent
    with pytest.raises(DownloadError) as err:
        fetch("http://no-such-host.invalid/video.mp4", tmp_path, retries=0)
    assert str(err.value) == "The host name no-such-host.invalid could not be resolved."
    for text in ("HTTPConnectionPool", "Errno", "NewConnectionError"):
        assert text not in str(err.value)
