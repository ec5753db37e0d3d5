"""Fetch a video from a URL into a directory: plain HTTP(S) for direct media, else yt-dlp.

Transient failures (timeouts, connection resets, HTTP 5xx/429) are retried with exponential
backoff; permanent ones (404, unsupported URL, too large, too long) raise DownloadError at once
with a stable `code` so a job fails with a reason a user can act on.
"""
from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from vidclass.media import netguard

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".webm", ".mkv", ".mov", ".avi", ".mpg", ".mpeg", ".flv",
                    ".ts", ".3gp", ".ogv", ".wmv")
CHUNK = 1 << 16
MAX_REDIRECTS = 5
# Untyped downloads are tried as video files (decoding decides); pages go to yt-dlp.
_BINARY = ("application/octet-stream", "binary/octet-stream", "application/mp4")
_PAGES = ("text/html", "application/xhtml+xml", "application/x-mpegurl", "application/vnd.apple.mpegurl",
          "application/dash+xml")


class DownloadError(Exception):
    """A download failed. `permanent` errors are not worth retrying."""

    def __init__(self, message: str, code: str = "download_failed", permanent: bool = True):
        super().__init__(message)
        self.code = code
        self.permanent = permanent


def fetch(url: str, dest_dir: str | Path, *, max_bytes: int = 500 << 20, max_seconds: float = 3600,
          timeout: float = 30, retries: int = 3, backoff_s: float = 1.0, progress=None,
          block_private: bool = False, allowed_private: str = "", deadline_s: float | None = None,
          cancelled=None) -> Path:
    """Download `url` into `dest_dir` and return the file's path.

    progress: optional callable(fraction 0..1) called while bytes arrive (also a heartbeat).
    block_private: refuse connections to non-public addresses (vidclass.media.netguard), on the
    resolved address of every connection: each redirect hop and every request yt-dlp makes.
    allowed_private: ALLOWED_PRIVATE_NETWORKS, exceptions to block_private.
    deadline_s: total time for the whole download, retries included (download_timeout after).
    cancelled: an object with is_set() (a threading.Event); when it is set the download stops
    within a fraction of a second and DownloadCancelled is raised.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"Unsupported URL scheme {scheme!r}: only http and https.", "bad_url")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with netguard.guarded(allowed_private, block=block_private) as scope, \
            _Watchdog(scope, deadline_s, cancelled):
        attempt = 0
        while True:
            try:
                path = _fetch_once(url, dest_dir, max_bytes, max_seconds, timeout, progress)
                _raise_if_stopped(scope, deadline_s)   # a cut-off body can look complete
                return path
            except DownloadError as exc:
                _raise_if_stopped(scope, deadline_s)
                if scope.blocked:
                    raise DownloadError(netguard.describe(scope.blocked[-1]), "blocked_url") from exc
                if exc.permanent or attempt >= retries:
                    raise
            attempt += 1
            if scope.abort_reason is None:
                time.sleep(backoff_s * 2 ** (attempt - 1))


class DownloadCancelled(DownloadError):
    """The caller's `cancelled` event was set while downloading."""

    def __init__(self):
        super().__init__("The job was cancelled during its download.", "cancelled")


def _raise_if_stopped(scope, deadline_s) -> None:
    if scope.abort_reason == "cancelled":
        raise DownloadCancelled()
    if scope.abort_reason == "deadline":
        raise DownloadError(f"The download did not finish within {deadline_s:g} s "
                            f"(DOWNLOAD_DEADLINE_S).", "download_timeout")


class _Watchdog:
    """A thread that aborts the scope's connections at the deadline or on cancellation: reads
    blocked on a trickling server wake up at once (a socket timeout never fires at 1 byte/s)."""

    def __init__(self, scope, deadline_s, cancelled):
        self.scope, self.cancelled = scope, cancelled
        self.deadline = time.monotonic() + deadline_s if deadline_s else None
        self.done = threading.Event()
        self.thread = None

    def __enter__(self):
        if self.deadline is not None or self.cancelled is not None:
            self.thread = threading.Thread(target=self._run, daemon=True, name="download-watchdog")
            self.thread.start()
        return self

    def _run(self):
        while not self.done.wait(0.2):
            if self.cancelled is not None and self.cancelled.is_set():
                self.scope.abort("cancelled")
                return
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.scope.abort("deadline")
                return

    def __exit__(self, *exc):
        self.done.set()
        if self.thread is not None:
            self.thread.join()


def _where(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        port = "?"
    return f"{parts.hostname}:{port}"


def _causes(exc: BaseException):
    """exc and everything it wraps (__cause__, __context__, urllib3's .reason, args, yt-dlp's
    exc_info), each once."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None),
                 *[a for a in e.args if isinstance(a, BaseException)]]
        info = getattr(e, "exc_info", None)
        if isinstance(info, tuple) and len(info) > 1:
            todo.append(info[1])


def network_error(exc: BaseException, url: str, during: str = "connect") -> DownloadError:
    """A retryable network_error with a plain sentence (library text goes to the log only)."""
    log.debug("network error for %s: %r", url, exc)      # the raw chain; users get the sentence
    where = _where(url)
    causes = list(_causes(exc))
    kinds = tuple(type(c) for c in causes)

    def has(*types):
        return any(issubclass(k, types) for k in kinds)

    text = " ".join(str(c) for c in causes).lower()
    if has(netguard.BlockedAddress):
        blocked = next(c for c in causes if isinstance(c, netguard.BlockedAddress))
        return DownloadError(netguard.describe(blocked), "blocked_url")
    if has(socket.gaierror) or "name or service not known" in text or "failed to resolve" in text:
        return DownloadError(f"The host name {urlsplit(url).hostname} could not be resolved.",
                             "network_error", permanent=False)
    if has(ConnectionRefusedError) or "connection refused" in text:
        return DownloadError(f"The server at {where} refused the connection.", "network_error",
                             permanent=False)
    if has(ssl.SSLCertVerificationError) or "certificate verify failed" in text:
        return DownloadError(f"The server at {where} has an invalid TLS certificate.", "network_error")
    if has(TimeoutError, socket.timeout, requests.Timeout) or "timed out" in text:
        return DownloadError(f"The server at {where} did not answer in time.", "network_error",
                             permanent=False)
    if during == "body":
        return DownloadError(f"The connection to {where} was cut before the video was complete.",
                             "network_error", permanent=False)
    return DownloadError(f"The connection to {where} failed.", "network_error", permanent=False)


def _get(url: str, timeout: float):
    """GET with redirects followed here (at most MAX_REDIRECTS; netguard checks each connection)."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = requests.get(url, stream=True, timeout=timeout, allow_redirects=False)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise network_error(exc, url) from exc
        except requests.RequestException as exc:
            log.info("bad URL %s: %r", url, exc)
            raise DownloadError(f"The URL {url} cannot be fetched.", "bad_url") from exc
        if not response.is_redirect:
            return response
        response.close()
        url = urljoin(url, response.headers["Location"])
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise DownloadError("The server redirected to a URL that is not http or https.", "bad_url")
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects from {url}", "bad_url")


def _fetch_once(url, dest_dir, max_bytes, max_seconds, timeout, progress) -> Path:
    response = _get(url, timeout)
    with response:
        _check_status(response.status_code, url)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        path_ext = Path(urlsplit(response.url).path).suffix.lower()
        if content_type.startswith("video/") or path_ext in VIDEO_EXTENSIONS or content_type in _BINARY:
            path = _stream(response, dest_dir, path_ext, max_bytes, progress, url)
            _check_duration(path, max_seconds)
            return path
        if content_type and content_type not in _PAGES:
            raise DownloadError(f"{url} serves {content_type}, neither a video nor a web page with one",
                                "not_a_video")
    # A web page: let yt-dlp find the video in it (or fail with "unsupported URL").
    return _yt_dlp(url, dest_dir, max_bytes, max_seconds, timeout, progress)


def _check_status(status: int, url: str) -> None:
    if status < 400:
        return
    if status >= 500 or status in (408, 429):
        raise DownloadError(f"HTTP {status} from {url}", "http_error", permanent=False)
    code = "not_found" if status in (404, 410) else "http_error"
    raise DownloadError(f"HTTP {status} from {url}", code)


def _stream(response, dest_dir: Path, ext: str, max_bytes: int, progress, url: str) -> Path:
    length = int(response.headers.get("Content-Length") or 0)
    if length > max_bytes:
        raise DownloadError(f"video is {length / 2**20:.1f} MB, more than the "
                            f"{max_bytes / 2**20:.0f} MB limit", "too_large")
    path = dest_dir / ("video" + (ext if ext in VIDEO_EXTENSIONS else ".mp4"))
    received = 0
    try:
        with open(path, "wb") as out:
            for chunk in response.iter_content(CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise DownloadError(f"video is larger than the {max_bytes / 2**20:.0f} MB limit",
                                        "too_large")
                out.write(chunk)
                if progress and length:
                    progress(min(1.0, received / length))
    except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
            ConnectionError, TimeoutError, ssl.SSLError) as exc:
        # A connection cut mid-body (ChunkedEncodingError, IncompleteRead, reset): worth a retry.
        path.unlink(missing_ok=True)
        raise network_error(exc, url, during="body") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if length and received < length:      # urllib3 checks this too; a missing check is costly
        path.unlink(missing_ok=True)
        raise network_error(ConnectionError("short body"), url, during="body")
    if received == 0:
        path.unlink(missing_ok=True)
        raise DownloadError("the server sent an empty file", "empty_download")
    return path


def _check_duration(path: Path, max_seconds: float) -> None:
    """Refuse a direct download longer than max_seconds (yt-dlp checks before downloading)."""
    from vidclass.media.frames import TooLong, check_duration

    try:
        check_duration(path, max_seconds)
    except TooLong as exc:
        path.unlink(missing_ok=True)
        raise DownloadError(str(exc), "too_long") from None


_TRANSIENT_HINTS = ("timed out", "timeout", "connection reset", "temporary failure", "http error 5",
                    "http error 429", "remote end closed", "connection aborted", "connection refused",
                    "incomplete read", "content too short", "did not get any data")


def _yt_dlp(url, dest_dir: Path, max_bytes, max_seconds, timeout, progress) -> Path:
    import yt_dlp

    rejected: list[str] = []

    def match_filter(info, *, incomplete=False):
        duration = info.get("duration")
        if duration and duration > max_seconds:
            rejected.append(f"The video is {duration:.0f} s long, more than the {max_seconds:.0f} s "
                            f"limit (MAX_VIDEO_SECONDS).")
            return rejected[-1]
        if info.get("is_live"):     # streams have no end (and yt-dlp records them with ffmpeg)
            rejected.append("This is a live stream; only recorded videos can be classified.")
            return rejected[-1]
        return None

    def hook(d):
        if progress and d.get("status") == "downloading":
            total = d.get("total_bytes") or d.get("total_bytes_estimate")
            if total:
                progress(min(1.0, d.get("downloaded_bytes", 0) / total))

    options = {
        "outtmpl": str(dest_dir / "video.%(ext)s"),
        "noplaylist": True,
        "max_filesize": max_bytes,
        "match_filter": match_filter,
        "socket_timeout": timeout,
        "retries": 0, "fragment_retries": 0,   # fetch() retries with backoff itself
        # One file (no ffmpeg merge), fetched by yt-dlp's own Python downloaders: an external
        # program (ffmpeg for HLS, rtmpdump, ...) would open connections netguard cannot see,
        # and fragments fetched in other threads would escape the thread's guard.
        "format": "best[height<=720][protocol^=http]/best[protocol^=http]"
                  "/best[height<=720][protocol^=m3u8]/best[protocol^=m3u8]",
        "external_downloader": {"default": "native"},
        "hls_prefer_native": True,
        "concurrent_fragment_downloads": 1,
        "quiet": True, "no_warnings": True, "noprogress": True,
        "progress_hooks": [hook],
        "cachedir": False,
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            ydl.extract_info(url, download=True)
    except yt_dlp.utils.DownloadError as exc:
        message = str(exc).replace("ERROR: ", "", 1)
        lower = message.lower()
        log.info("yt-dlp failed on %s: %s", url, message)
        if "unsupported url" in lower:
            raise DownloadError(f"No video found at {url} (not a video file or a supported site).",
                                "unsupported_url") from exc
        if "http error 404" in lower or "http error 410" in lower:
            raise DownloadError(f"A page or video behind {url} was not found (HTTP 404).",
                                "not_found") from exc
        if "requested format is not available" in lower:
            raise DownloadError(f"The video at {url} is only offered in a form this service does not "
                                "download (live stream, RTMP or similar).", "unsupported_url") from exc
        causes = list(_causes(exc))
        if any(isinstance(c, OSError) for c in causes) or any(h in lower for h in _TRANSIENT_HINTS):
            raise network_error(exc, url, during="body") from exc
        raise DownloadError(f"The video at {url} could not be downloaded.", "download_failed") from exc
    if rejected:
        raise DownloadError(rejected[0], "live_stream" if "live" in rejected[0] else "too_long")
    files = [p for p in dest_dir.glob("video.*") if not p.name.endswith((".part", ".ytdl"))]
    if not files:
        raise DownloadError(f"Nothing downloaded from {url}: larger than the "
                            f"{max_bytes / 2**20:.0f} MB limit or no downloadable format.", "too_large")
    return files[0]
