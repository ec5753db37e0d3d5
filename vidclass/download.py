"""Fetch a video from a URL into a directory: plain HTTP(S) for direct media, else yt-dlp.

Transient failures (timeouts, connection resets, HTTP 5xx/429) are retried with exponential
backoff; permanent ones (404, unsupported URL, too large, too long) raise DownloadError at once
with a stable `code` so a job fails with a reason a user can act on.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

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


def check_public_url(url: str) -> None:
    """Raise DownloadError("blocked_url") unless every address the URL's host resolves to is a
    public one. (A host that changes its answer between this check and the connection is not
    caught: this keeps honest users' URLs off the internal network, it is not a firewall.)"""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme {parts.scheme!r}: only http and https", "bad_url")
    host = parts.hostname
    if not host:
        raise DownloadError(f"bad URL {url}: no host", "bad_url")
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadError(f"could not resolve {host}: {exc}", "network_error", permanent=False) from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise DownloadError(f"{url} points to the non-public address {address}; this service "
                                "only fetches public URLs (BLOCK_PRIVATE_URLS)", "blocked_url")


def fetch(url: str, dest_dir: str | Path, *, max_bytes: int = 500 << 20, max_seconds: float = 3600,
          timeout: float = 30, retries: int = 3, backoff_s: float = 1.0, progress=None,
          block_private: bool = False) -> Path:
    """Download `url` into `dest_dir` and return the file's path.

    progress: optional callable(fraction 0..1) called while bytes arrive (also a heartbeat).
    block_private: refuse URLs (and redirect targets) on non-public addresses (check_public_url).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme {scheme!r}: only http and https", "bad_url")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            return _fetch_once(url, dest_dir, max_bytes, max_seconds, timeout, progress, block_private)
        except DownloadError as exc:
            if exc.permanent or attempt >= retries:
                raise
        attempt += 1
        time.sleep(backoff_s * 2 ** (attempt - 1))


def _get(url: str, timeout: float, block_private: bool):
    """GET with redirects followed here, so that each hop can be checked before it is requested."""
    for _ in range(MAX_REDIRECTS + 1):
        if block_private:
            check_public_url(url)
        try:
            response = requests.get(url, stream=True, timeout=timeout, allow_redirects=False)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise DownloadError(f"could not reach {url}: {exc}", "network_error", permanent=False) from exc
        except requests.RequestException as exc:
            raise DownloadError(f"bad URL {url}: {exc}", "bad_url") from exc
        if not response.is_redirect:
            return response
        response.close()
        url = urljoin(url, response.headers["Location"])
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects from {url}", "bad_url")


def _fetch_once(url, dest_dir, max_bytes, max_seconds, timeout, progress, block_private) -> Path:
    response = _get(url, timeout, block_private)
    with response:
        _check_status(response.status_code, url)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        path_ext = Path(urlsplit(response.url).path).suffix.lower()
        if content_type.startswith("video/") or path_ext in VIDEO_EXTENSIONS or content_type in _BINARY:
            path = _stream(response, dest_dir, path_ext, max_bytes, progress)
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


def _stream(response, dest_dir: Path, ext: str, max_bytes: int, progress) -> Path:
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
    except (requests.Timeout, requests.ConnectionError) as exc:
        path.unlink(missing_ok=True)
        raise DownloadError(f"download interrupted: {exc}", "network_error", permanent=False) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if received == 0:
        path.unlink(missing_ok=True)
        raise DownloadError("the server sent an empty file", "empty_download")
    return path


def _check_duration(path: Path, max_seconds: float) -> None:
    """Refuse a direct download longer than max_seconds (yt-dlp checks before downloading).
    A file that does not even open is left to the frame sampler, which reports it clearly."""
    import av

    try:
        with av.open(str(path)) as container:
            duration = container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, OSError, ValueError):
        return
    if duration and duration > max_seconds:
        path.unlink(missing_ok=True)
        raise DownloadError(f"video is {duration:.0f} s long, more than the {max_seconds:.0f} s limit "
                            f"(MAX_VIDEO_SECONDS)", "too_long")


_TRANSIENT_HINTS = ("timed out", "timeout", "connection reset", "temporary failure", "http error 5",
                    "http error 429", "remote end closed", "connection aborted", "connection refused")


def _yt_dlp(url, dest_dir: Path, max_bytes, max_seconds, timeout, progress) -> Path:
    import yt_dlp

    rejected: list[str] = []

    def match_filter(info, *, incomplete=False):
        duration = info.get("duration")
        if duration and duration > max_seconds:
            rejected.append(f"video is {duration:.0f} s long, more than the {max_seconds:.0f} s limit")
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
        "format": "best[height<=720]/best",     # one file: no ffmpeg merge needed
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
        if "unsupported url" in lower:
            raise DownloadError(f"no video found at {url} (not a video file or a supported site)",
                                "unsupported_url") from exc
        if "http error 404" in lower or "http error 410" in lower:
            raise DownloadError(message, "not_found") from exc
        transient = any(h in lower for h in _TRANSIENT_HINTS)
        raise DownloadError(message, "download_failed", permanent=not transient) from exc
    if rejected:
        raise DownloadError(rejected[0], "too_long")
    files = [p for p in dest_dir.glob("video.*") if not p.name.endswith((".part", ".ytdl"))]
    if not files:
        raise DownloadError(f"nothing downloaded from {url}: larger than the "
                            f"{max_bytes / 2**20:.0f} MB limit or no downloadable format", "too_large")
    return files[0]
