"""vidclass.media.netguard: the connect-time private-address guard, per address class and per bypass.

The bypasses are real requests against servers on 127.0.0.1: the guarded side is told to allow
one server's port (ALLOWED_PRIVATE_NETWORKS=127.0.0.1:<port>) and must refuse every other.
"""
import http.server
import socket
import threading
from pathlib import Path

import pytest

from vidclass.media import netguard
from vidclass.media.download import DownloadError, fetch

FIXTURES = Path(__file__).parent / "fixtures"
CLIP = FIXTURES / "gaming_supertux_4.mp4"


@pytest.mark.parametrize("address,reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.0.10", "private"),
    ("fd00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.1.2.3", "multicast"), ("ff0e::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("100.64.0.1", "non-public"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"), ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("64:ff9b::7f00:1", "NAT64 loopback"), ("64:ff9b::a9fe:a9fe", "NAT64 link-local"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("2002:7f00:1::1", "6to4 loopback"), ("2002:c0a8:1::1", "6to4 private"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"), ("::7f00:1", "IPv4-compatible"),
    ("fec0::1", "site-local"), ("2001:db8::1", "private"),
])
def test_non_public_address_classes(address, reason):
    assert netguard.non_public_reason(address) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::6810:84e5",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_pass(address):
    assert netguard.non_public_reason(address) is None


def test_allow_list_forms():
    allow = netguard.AllowList("10.0.0.0/8, 192.168.1.7:8080, [fd00::5]:443, localhost")
    assert allow.allows("10.200.3.4", 80) and allow.allows("::ffff:10.1.1.1", 80)
    assert allow.allows("192.168.1.7", 8080) and not allow.allows("192.168.1.7", 8081)
    assert allow.allows("fd00::5", 443) and not allow.allows("fd00::5", 80)
    assert allow.allows("127.0.0.1", 1)                      # localhost, resolved
    assert not allow.allows("172.16.0.1", 80)
    assert not netguard.AllowList("").allows("127.0.0.1", 80)


def test_guard_only_applies_inside_the_scope():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()     # outside: allowed
        with netguard.guarded("") as scope:
            with pytest.raises(netguard.BlockedAddress):
                socket.create_connection(("127.0.0.1", port), timeout=2)
            with netguard.unguarded():                                     # stepped out
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            # Another thread (the worker's heartbeat, its database) is not guarded.
            ok = []
            t = threading.Thread(target=lambda: ok.append(
                socket.create_connection(("127.0.0.1", port), timeout=2).close() is None))
            t.start()
            t.join()
            assert ok == [True]
        assert [b.reason for b in scope.blocked] == ["loopback"]
        with netguard.guarded(f"127.0.0.1:{port}"):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        listener.close()


# ------------------------------------------------------------------ bypasses, end to end

class _Handler(http.server.BaseHTTPRequestHandler):
    hits: list = []
    video_base = ""        # where the page's <video> and the redirect point

    def log_message(self, *_):
        pass

    def do_GET(self):
        self.hits.append((self.server.server_address[1], self.path))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", f"{self.video_base}/clip.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/page.html"):
            body = (f'<html><head><title>clip</title></head><body>'
                    f'<video src="{self.video_base}/clip.mp4" type="video/mp4"></video>'
                    f'</body></html>').encode()
            ctype = "text/html"
        else:
            body, ctype = CLIP.read_bytes(), "video/mp4"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def servers():
    """`allowed` (the guarded side may reach it) and `inner` (it may not), both on 127.0.0.1."""
    allowed, inner = _serve(), _serve()
    _Handler.video_base = f"http://127.0.0.1:{inner.server_address[1]}"
    yield allowed.server_address[1], inner.server_address[1]
    for httpd in (allowed, inner):
        httpd.shutdown()
        httpd.server_close()


def _inner_hits(inner_port):
    return [p for port, p in _Handler.hits if port == inner_port]


def test_backslash_at_url_is_refused_at_connect_time(servers, tmp_path):
    allowed, inner = servers
    url = f"http://127.0.0.1:{inner}\\@8.8.8.8/video.mp4"    # urllib3 connects to 127.0.0.1
    before = len(_inner_hits(inner))
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path, retries=0, block_private=True, allowed_private=f"127.0.0.1:{allowed}")
    assert err.value.code == "blocked_url" and err.value.permanent
    assert "loopback" in str(err.value) and "ALLOWED_PRIVATE_NETWORKS" in str(err.value)
    assert len(_inner_hits(inner)) == before, "the request reached the internal server"
    # Unguarded, the same URL does reach it (so the test above can fail).
    fetch(url, tmp_path / "open", retries=0)
    assert len(_inner_hits(inner)) == before + 1


def test_redirect_to_an_internal_address_is_refused(servers, tmp_path):
    allowed, inner = servers
    before = len(_inner_hits(inner))
    with pytest.raises(DownloadError) as err:
        fetch(f"http://127.0.0.1:{allowed}/redirect", tmp_path, retries=0, block_private=True,
              allowed_private=f"127.0.0.1:{allowed}")
    assert err.value.code == "blocked_url"
    assert len(_inner_hits(inner)) == before
    path = fetch(f"http://127.0.0.1:{allowed}/redirect", tmp_path / "ok", retries=0,
                 block_private=True, allowed_private=f"127.0.0.1:{allowed},127.0.0.1:{inner}")
    assert path.read_bytes() == CLIP.read_bytes()


def test_yt_dlp_media_url_inside_an_allowed_page_is_refused(servers, tmp_path):
    allowed, inner = servers
    before = len(_inner_hits(inner))
    with pytest.raises(DownloadError) as err:
        fetch(f"http://127.0.0.1:{allowed}/page.html", tmp_path, retries=0, block_private=True,
              allowed_private=f"127.0.0.1:{allowed}")
    assert err.value.code == "blocked_url", err.value
    assert len(_inner_hits(inner)) == before, "yt-dlp fetched the internal video"
    # With the inner server allowed too, yt-dlp finds and downloads the <video>.
    path = fetch(f"http://127.0.0.1:{allowed}/page.html", tmp_path / "ok", retries=0,
                 block_private=True, allowed_private=f"127.0.0.1:{allowed},127.0.0.1:{inner}")
    assert path.read_bytes() == CLIP.read_bytes()
    assert len(_inner_hits(inner)) > before


def test_refusal_messages_use_the_right_article():
    from vidclass.media.netguard import BlockedAddress, describe

    assert " is an unspecified address;" in describe(BlockedAddress("0.0.0.0", 80, "unspecified"))
    assert " is an IPv4-mapped loopback address;" in describe(BlockedAddress("::ffff:127.0.0.1", 80, "IPv4-mapped loopback"))
    assert " is a loopback address;" in describe(BlockedAddress("127.0.0.1", 80, "loopback"))
