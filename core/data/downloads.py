"""Photos by URL: fetched only from public addresses (SSRF-safe, the address pinned),
bounded in size and time, cached on disk within a cap."""

from __future__ import annotations

import hashlib
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.common.errors import InputError, one_line
from core.common.files import atomic_write_bytes
from core.common.images import _allowed_formats
from core.common.settings import get_settings

DOWNLOAD_TIMEOUT: float = 10.0
DOWNLOAD_MAX_BYTES: int = 20 * 1024 * 1024
_USER_AGENT = "CatalogStudio/0.1 (+image import)"



# --------------------------------------------------------------------------- downloads


class DownloadError(InputError):
    """A URL that could not be fetched; `reason` is the bare cause."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = one_line(reason)
        super().__init__(f"{url}: {self.reason}")


#: the download cache is trimmed (oldest first) past this size; STUDIO_DOWNLOAD_CACHE_MB overrides it
DOWNLOAD_CACHE_MAX_BYTES: int = 2 * 1024**3
#: files touched this recently are kept (an import still needs them) unless the cache is over twice the cap
DOWNLOAD_CACHE_GRACE_S: float = 15 * 60
MAX_REDIRECTS = 5
ALLOW_PRIVATE_ENV = "STUDIO_ALLOW_PRIVATE_URLS"
ALLOWLIST_ENV = "STUDIO_URL_ALLOWLIST"
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="resolve")
_cache_lock = threading.Lock()
_written_since_trim = [0, False]  # bytes written since the last trim, whether one ran in this process


def _downloads_dir() -> Path:
    return get_settings().cache_dir / "downloads"


def _cache_path(url: str) -> Path:
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
    suffix = Path(urllib.parse.urlsplit(url).path).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        suffix = ""
    return _downloads_dir() / f"{digest}{suffix}"


@dataclass(frozen=True)
class UrlPolicy:
    """Which addresses the server may fetch from. By default only public ones: a URL in a
    reviewer's CSV must not reach the server's own network (SSRF). An admin widens it with
    STUDIO_ALLOW_PRIVATE_URLS=1 (everything) or STUDIO_URL_ALLOWLIST=host,10.0.0.0/8."""

    allow_private: bool = False
    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_env(cls) -> "UrlPolicy":
        """From the settings at each call, so an admin's change (and a test's monkeypatch) applies at once."""
        settings = get_settings()
        allow = settings.allow_private_urls
        hosts, networks = set(), []
        for item in settings.url_allowlist:
            item = item.strip().strip("[]").lower()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.rstrip("."))
        return cls(allow, frozenset(hosts), tuple(networks))

    def refusal(self, host: str, address: str) -> str | None:
        """None when `address` (what `host` resolved to) may be fetched, else the reason."""
        if self.allow_private or host.lower().rstrip(".") in self.hosts:
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip.version == net.version and ip in net for net in self.networks):
            return None
        if ip.version == 6:  # an IPv4 address dressed as IPv6 is judged as that IPv4 address
            inner = ip.ipv4_mapped or ip.sixtofour
            if inner is None and ip in _NAT64:
                inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if inner is not None:
                ip = inner
                if any(ip.version == net.version and ip in net for net in self.networks):
                    return None
        if (ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                                  or ip.is_unspecified or ip.is_private)):
            return None
        return "refused: private address"


def _resolve(host: str, port: int, deadline: float) -> list[tuple[int, str]]:
    """(family, address) of every address `host` resolves to (numeric spellings such as
    2130706433, 0x7f000001 or 127.1 included), within the download's deadline."""
    future = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(0.01, deadline - time.monotonic()))
    except FuturesTimeout:
        raise TimeoutError from None
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host '{host}' ({exc.strerror or exc})") from None
    seen, out = set(), []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in seen:
            seen.add(sockaddr[0])
            out.append((family, sockaddr[0]))
    if not out:
        raise OSError(f"cannot resolve host '{host}'")
    return out


def _connect_pinned(url: str, policy: UrlPolicy, deadline: float, original: str) -> http.client.HTTPConnection:
    """A connection for `url` to an address checked against `policy`: the name is resolved
    once, every address checked, and the socket connects to that checked address (so DNS
    cannot answer differently between the check and the connection); requests still carry
    the URL's own Host header (and TLS its server name)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(original, f"unsupported URL scheme '{scheme}'")
    host = parts.hostname
    if not host:
        raise DownloadError(original, "download failed: the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise DownloadError(original, "download failed: bad port in the URL") from None
    addresses = _resolve(host, port, deadline)
    for _, address in addresses:  # one private address among them is enough to refuse
        reason = policy.refusal(host, address)
        if reason:
            raise DownloadError(original, reason)
    remaining = max(0.01, deadline - time.monotonic())
    context = ssl.create_default_context() if scheme == "https" else None
    conn = (http.client.HTTPSConnection(host, port, timeout=remaining, context=context) if context
            else http.client.HTTPConnection(host, port, timeout=remaining))
    last: OSError | None = None
    for _, address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=max(0.01, deadline - time.monotonic()))
        except OSError as exc:
            last = exc
            continue
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        conn.sock = sock  # http.client uses it as is: no second resolution
        return conn
    raise last or OSError("cannot connect")


def _request_target(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _looks_like_image(data: bytes) -> bool:
    """Whether Pillow recognises `data` as one of the allowed image formats (header only):
    an HTML error page or any other file is never kept in the cache."""
    try:
        with Image.open(io.BytesIO(data), formats=_allowed_formats()):
            return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot identify is "not an image"
        return False


def _fetch(url: str, *, timeout: float, max_bytes: int, policy: UrlPolicy) -> bytes:
    """The body of `url` (redirects followed, each hop checked like the first), within one
    deadline for the whole download: a server that trickles bytes is cut off at `timeout`."""
    deadline = time.monotonic() + timeout
    current = urllib.parse.quote(url, safe=_URL_SAFE)
    for _ in range(MAX_REDIRECTS + 1):
        conn = _connect_pinned(current, policy, deadline, url)
        expired = threading.Event()

        def cut_off(sock: socket.socket = conn.sock) -> None:  # unblocks any read in progress
            expired.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut_off)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("GET", _request_target(current), headers={
                "User-Agent": _USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity",
                "Connection": "close"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise DownloadError(url, f"download failed: HTTP {response.status} without a Location")
                current = urllib.parse.urljoin(current, urllib.parse.quote(location.strip(), safe=_URL_SAFE))
                continue
            if response.status != 200:
                raise DownloadError(url, f"download failed: HTTP {response.status}")
            return _read_body(response, url, max_bytes, deadline)
        except DownloadError:
            raise
        except Exception:
            if expired.is_set() or time.monotonic() >= deadline:
                raise TimeoutError from None
            raise
        finally:
            watchdog.cancel()
            conn.close()
    raise DownloadError(url, f"download failed: more than {MAX_REDIRECTS} redirects")


def _read_body(response: http.client.HTTPResponse, url: str, max_bytes: int, deadline: float) -> bytes:
    """The response body, refused past `max_bytes` (announced or counted) or past `deadline`."""
    limit_mb = f"{max_bytes / (1024 * 1024):g} MB"
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise DownloadError(url, f"download too large ({int(length)} bytes), limit {limit_mb}")
    chunks, total = [], 0
    while True:
        chunk = response.read1(1 << 16)  # one socket read: the deadline is checked between reads
        if time.monotonic() >= deadline:
            raise TimeoutError
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise DownloadError(url, f"download too large (over {limit_mb})")
        chunks.append(chunk)


def trim_download_cache(max_bytes: int | None = None, *, grace_s: float = DOWNLOAD_CACHE_GRACE_S) -> int:
    """Delete the oldest cached downloads until the cache is under `max_bytes` (default
    DOWNLOAD_CACHE_MAX_BYTES, or STUDIO_DOWNLOAD_CACHE_MB). Files used in the last
    `grace_s` seconds are spared (an import in progress still reads them) unless the cache
    is over twice the cap: the disk stays bounded either way. Returns the bytes freed."""
    if max_bytes is None:
        cap_mb = get_settings().download_cache_mb
        max_bytes = int(cap_mb * 1024 * 1024) if cap_mb is not None else DOWNLOAD_CACHE_MAX_BYTES
    folder = _downloads_dir()
    if not folder.is_dir():
        return 0
    files = []
    for path in folder.iterdir():
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file():
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    freed = 0
    recent = time.time() - grace_s
    for mtime, size, path in sorted(files):
        if total <= max_bytes:
            break
        if mtime > recent and total <= 2 * max_bytes:
            continue
        path.unlink(missing_ok=True)
        total -= size
        freed += size
    return freed


def _note_written(size: int) -> None:
    """Trim the cache now and then (not on every file: listing it costs as it grows)."""
    with _cache_lock:
        _written_since_trim[0] += size
        due = not _written_since_trim[1] or _written_since_trim[0] >= DOWNLOAD_CACHE_MAX_BYTES // 20
        if due:
            _written_since_trim[0], _written_since_trim[1] = 0, True
    if due:
        trim_download_cache()


def download_url(
    url: str,
    *,
    timeout: float = DOWNLOAD_TIMEOUT,
    max_bytes: int = DOWNLOAD_MAX_BYTES,
) -> Path:
    """Fetch an http(s) image URL into the download cache and return the cached file.

    Only public addresses are fetched unless an admin allows more (`UrlPolicy`); every
    redirect hop is checked the same way; `timeout` is one deadline for the whole
    download; at most `max_bytes`; only images are kept. Cached by SHA-256 of the URL under
    `get_settings().cache_dir / "downloads"` (a cached URL is not requested again, and the
    cache is trimmed, oldest first). Written atomically (temp file + rename), so a crash or
    a concurrent import never leaves half a file. Failures raise `DownloadError`."""
    url = url.strip()
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(url, f"unsupported URL scheme '{scheme}'")
    target = _cache_path(url)
    if target.is_file() and target.stat().st_size > 0:
        try:
            os.utime(target)  # recently used: trimmed last
        except OSError:
            pass
        return target
    try:
        data = _fetch(url, timeout=timeout, max_bytes=max_bytes, policy=UrlPolicy.from_env())
    except DownloadError:
        raise
    except TimeoutError:
        raise DownloadError(url, f"download failed: timed out after {timeout:g} s") from None
    except ssl.SSLError as exc:
        raise DownloadError(url, f"download failed: TLS error ({one_line(exc.reason or exc)})") from None
    except OSError as exc:
        reason = exc.strerror or one_line(exc) or type(exc).__name__
        raise DownloadError(url, f"download failed: {reason}") from None
    except Exception as exc:  # noqa: BLE001 - a bad URL must never crash an import
        raise DownloadError(url, f"download failed: {one_line(exc) or type(exc).__name__}") from None
    if not data:
        raise DownloadError(url, "download failed: empty response")
    if not _looks_like_image(data):
        raise DownloadError(url, "not an image")
    atomic_write_bytes(target, data)
    _note_written(len(data))
    return target


