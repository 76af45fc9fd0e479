"""Image URLs are fetched by the server, so they must never reach its own network (issue 10,
item 2, SSRF): loopback, private, link-local, multicast and reserved addresses are refused
in every spelling (2130706433, 0x7f000001, 127.1, localhost, [::1], IPv4-mapped IPv6),
every redirect hop is checked, the connection goes to the address that was checked (the
URL's Host header kept), one deadline covers the whole download, the size is capped and
only images enter the cache, which is itself bounded. An admin opens private hosts with
STUDIO_ALLOW_PRIVATE_URLS=1 or STUDIO_URL_ALLOWLIST.

The servers are real HTTP servers on 127.0.0.1 (threads); nothing leaves the machine."""

from __future__ import annotations

import http.server
import io
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from PIL import Image

from core.data.catalogue import load_catalogue

from core.data.downloads import DownloadError, download_url, trim_download_cache

PROXIES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def png_bytes(colour: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "PNG")
    return buffer.getvalue()


class Server:
    """A server on 127.0.0.1 with a few tricks: /a.png (an image), /page.html (not one),
    /redirect?to=URL (302), /trickle (an image sent one byte every 0.1 s), /endless (bytes
    without a Content-Length). `seen` lists (path, Host header) of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        image = png_bytes()
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                seen.append((self.path, self.headers.get("Host", "")))
                if self.path.split("?")[0] == "/a.png":
                    self.reply(200, image, "image/png")
                elif self.path == "/page.html":
                    self.reply(200, b"<html>sign in</html>", "text/html")
                elif self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/trickle":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(image)))
                    self.end_headers()
                    try:
                        for i in range(len(image)):  # ~10 s for the whole image: each read is quick
                            self.wfile.write(image[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                elif self.path == "/endless":
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(200):
                            self.wfile.write(b"x" * 10_000)
                    except OSError:
                        pass
                else:
                    self.reply(404, b"no", "text/plain")

            def reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path.lstrip('/')}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


@pytest.fixture
def server(studio_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A local server, with the default policy: no admin has allowed private addresses."""
    for var in PROXIES + ("STUDIO_ALLOW_PRIVATE_URLS", "STUDIO_URL_ALLOWLIST", "STUDIO_DOWNLOAD_CACHE_MB"):
        monkeypatch.delenv(var, raising=False)
    running = Server()
    try:
        yield running
    finally:
        running.httpd.shutdown()
        running.httpd.server_close()


def cached_files(home: Path) -> list[Path]:
    folder = home / "data" / "cache" / "downloads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "localhost", "[::1]",
                                  "[::ffff:127.0.0.1]", "0.0.0.0"])
def test_every_spelling_of_the_server_itself_is_refused(server: Server, studio_home: Path, host: str):
    with pytest.raises(DownloadError, match="^.*: refused: private address$"):
        download_url(server.url("a.png", host), timeout=3)
    assert server.seen == [] and cached_files(studio_home) == []


@pytest.mark.parametrize("url", ["http://10.0.0.1/a.png", "http://192.168.1.1/a.png", "http://172.16.0.1/a.png",
                                 "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/a.png",
                                 "http://224.0.0.1/a.png", "http://240.0.0.1/a.png", "http://[fe80::1]/a.png",
                                 "http://[fc00::1]/a.png", "http://[64:ff9b::a00:1]/a.png"])
def test_private_link_local_multicast_and_reserved_addresses_are_refused(server: Server, url: str):
    """Refused before any connection is tried (these would hang or reach the cloud's
    metadata service)."""
    started = time.monotonic()
    with pytest.raises(DownloadError, match="refused: private address"):
        download_url(url, timeout=5)
    assert time.monotonic() - started < 2


def test_a_catalogue_row_falls_back_to_its_text_and_says_why(server: Server, tmp_path: Path):
    csv = tmp_path / "c.csv"
    csv.write_text(f"title,image\nred kettle,{server.url('a.png')}\nblue mug,{server.url('a.png', 'localhost')}\n")
    catalogue = load_catalogue(csv, text_cols=["title"], image_col="image")
    assert catalogue.image_paths == [None, None] and catalogue.usable == [True, True]
    assert [m["reason"] for m in catalogue.report.missing_images] == ["refused: private address"] * 2
    assert any("refused: private address" in line for line in catalogue.report.summary_lines())
    assert server.seen == []


def test_an_admin_can_allow_private_hosts(server: Server, studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STUDIO_URL_ALLOWLIST", " images.internal , 127.0.0.0/8")
    assert download_url(server.url("a.png")).read_bytes() == png_bytes()
    monkeypatch.setenv("STUDIO_URL_ALLOWLIST", "localhost")  # a host name: that name only
    assert download_url(server.url("a.png", "localhost")).read_bytes() == png_bytes()
    with pytest.raises(DownloadError, match="refused: private address"):
        download_url(server.url("a.png?other", "127.1"))
    monkeypatch.delenv("STUDIO_URL_ALLOWLIST")
    monkeypatch.setenv("STUDIO_ALLOW_PRIVATE_URLS", "1")
    assert download_url(server.url("a.png?third", "2130706433")).read_bytes() == png_bytes()


def test_a_redirect_to_the_server_itself_is_refused(server: Server, monkeypatch: pytest.MonkeyPatch):
    """The first hop is allowed (an allow-listed name); the redirect it answers points at
    127.0.0.1, which is not: the second hop is checked like the first and never requested."""
    monkeypatch.setenv("STUDIO_URL_ALLOWLIST", "localhost")
    with pytest.raises(DownloadError, match="refused: private address"):
        download_url(server.url(f"redirect?to={server.url('a.png')}", "localhost"), timeout=3)
    assert server.paths() == [f"/redirect?to={server.url('a.png')}"]
    # an allowed target is followed (the redirect itself is not refused)
    monkeypatch.setenv("STUDIO_URL_ALLOWLIST", "localhost,127.0.0.1/32")
    path = download_url(server.url(f"redirect?to={server.url('a.png')}", "localhost"), timeout=3)
    assert path.read_bytes() == png_bytes()


def test_the_connection_goes_to_the_checked_address_with_the_urls_host(server: Server,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """Pinning: the name is resolved once per hop and the socket connects to that checked
    address, so a DNS answer that changes between check and connect (rebinding) cannot
    switch it; the request still names the URL's host."""
    import core.data.downloads

    calls: list[str] = []
    real = socket.getaddrinfo

    def resolve(host: str, *args: Any, **kwargs: Any):
        calls.append(host)
        if host == "shop.example":  # first answer: loopback (allow-listed); any later one would be a trap
            address = "127.0.0.1" if calls.count(host) == 1 else "10.9.9.9"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, args[0] if args else 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(core.data.downloads.socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setenv("STUDIO_URL_ALLOWLIST", "shop.example")
    path = download_url(f"http://shop.example:{server.port}/a.png", timeout=3)
    assert path.read_bytes() == png_bytes()
    assert calls.count("shop.example") == 1 and set(calls) <= {"shop.example", "127.0.0.1"}  # then the number only
    assert server.seen == [("/a.png", f"shop.example:{server.port}")]


# --------------------------------------------------------------------------- deadline, size, content


def test_one_deadline_for_the_whole_download(server: Server, monkeypatch: pytest.MonkeyPatch):
    """A server that sends a byte every 0.1 s never trips a per-read timeout; the download
    is still cut off at its one deadline."""
    monkeypatch.setenv("STUDIO_ALLOW_PRIVATE_URLS", "1")
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out after 1\.5 s"):
        download_url(server.url("trickle"), timeout=1.5)
    assert time.monotonic() - started < 3.5


def test_size_cap_without_a_content_length(server: Server, studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STUDIO_ALLOW_PRIVATE_URLS", "1")
    with pytest.raises(DownloadError, match="download too large"):
        download_url(server.url("endless"), max_bytes=100_000, timeout=5)
    assert cached_files(studio_home) == []


def test_only_images_enter_the_cache(server: Server, studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STUDIO_ALLOW_PRIVATE_URLS", "1")
    with pytest.raises(DownloadError, match="not an image"):
        download_url(server.url("page.html"))
    assert cached_files(studio_home) == []
    assert download_url(server.url("a.png")).read_bytes() == png_bytes()
    assert len(cached_files(studio_home)) == 1


def test_the_download_cache_is_trimmed_oldest_first(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    folder = studio_home / "data" / "cache" / "downloads"
    folder.mkdir(parents=True)
    now = time.time()
    for i in range(6):  # 6 files of 1000 bytes, f0 the oldest, all older than the grace period
        path = folder / f"f{i}.png"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (now - 7200 + i, now - 7200 + i))
    assert trim_download_cache(3500) == 3000
    assert sorted(p.name for p in folder.iterdir()) == ["f3.png", "f4.png", "f5.png"]

    # files used in the grace period are spared while the cache is under twice the cap...
    for path in folder.iterdir():
        os.utime(path)
    assert trim_download_cache(2000) == 0
    # ...and not beyond: the disk stays bounded whatever an import is doing
    assert trim_download_cache(1000) == 1000 and len(list(folder.iterdir())) == 2
    monkeypatch.setenv("STUDIO_DOWNLOAD_CACHE_MB", str(1000 / 1024 / 1024))
    assert trim_download_cache(grace_s=0) == 1000 and len(list(folder.iterdir())) == 1
