"""Importing a catalogue CSV, mapped by flags (which columns are text, label, image).

Used by the CLI (`python -m core train|predict|evaluate`) and by the app. The import is
forgiving about rows and strict about the file: a missing or broken image never fails
the import (the row keeps its text and the problem goes into the `ImportReport`), but
an unreadable file, a missing column or an impossible label level is an `InputError`
with a one-line message naming the file, row and column.

Row numbers everywhere are 1-based data rows: "row 1" is the first row after the header.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from core.common.errors import InputError, one_line
from core.common.files import atomic_write_bytes
from core.common.images import ImageDecodeError, _allowed_formats, open_image
from core.common.settings import get_settings
from core.common.text import MAX_TEXT_CHARS, cut_text

__all__ = [
    "DOWNLOAD_TIMEOUT",
    "DOWNLOAD_MAX_BYTES",
    "Catalogue",
    "DownloadError",
    "ImportReport",
    "UrlPolicy",
    "dedup_groups",
    "download_url",
    "join_text",
    "load_catalogue",
    "location",
    "normalize_text",
    "parse_category_tree",
    "read_csv",
    "trim_download_cache",
]

DOWNLOAD_TIMEOUT: float = 10.0
DOWNLOAD_MAX_BYTES: int = 20 * 1024 * 1024
_USER_AGENT = "CatalogStudio/0.1 (+image import)"
_TREE_SEP = ">>"
_UTF8_NAMES = {"utf8", "utf-8", "utf_8", "u8", "utf", "cp65001", "utf-8-sig", "utf_8_sig"}


# --------------------------------------------------------------------------- helpers


def location(source: str | Path, row: int | None = None, column: str | None = None) -> str:
    """The one way to say where something is: "products.csv, row 12, column 'image'".

    `row` is a 1-based data row (row 1 = first row after the header)."""
    parts = [Path(source).name if str(source) else "input"]
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)


def normalize_text(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: the key for duplicate detection."""
    return " ".join(str(text).lower().split())


def join_text(parts: Iterable[str]) -> str:
    """Join text fields into the model's input text: ". " between non-empty parts,
    whitespace collapsed. A part that already ends in punctuation gets just a space,
    so "Title." + "Desc" gives "Title. Desc", not "Title.. Desc". The app must build
    single-product text with this same function."""
    out = ""
    for part in parts:
        part = " ".join(str(part).split())
        if not part:
            continue
        if not out:
            out = part
        elif out[-1] in ".!?;:":
            out = f"{out} {part}"
        else:
            out = f"{out}. {part}"
    return out



def _quote_list(values: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    if len(values) > limit:
        shown += f", … ({len(values) - limit} more)"
    return shown


def _rows_text(rows: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    if len(rows) > limit:
        shown += f", … {len(rows) - limit} more"
    return shown


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


# --------------------------------------------------------------------------- CSV


def _decode(data: bytes, encoding: str, path: Path) -> str:
    """Decode the whole file first, so an error can name the line and the byte offset
    (pandas reports positions inside its own chunks, which mean nothing to a user)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"{path.name}: unknown encoding '{encoding}'") from None
    offset = 0
    if codec.replace("_", "-") in ("utf-8", "utf-8-sig") or encoding.lower() in _UTF8_NAMES:
        if data.startswith(b"\xef\xbb\xbf"):
            offset = 3
        codec = "utf-8"
    try:
        return data[offset:].decode(codec)
    except UnicodeDecodeError as exc:
        pos = exc.start + offset
        line = data.count(b"\n", 0, pos) + 1
        bad = data[pos : pos + 1].hex()
        hint = "; try --encoding latin-1" if codec != "latin-1" else ""
        raise InputError(
            f"{path.name}: cannot decode line {line} (byte offset {pos}, byte 0x{bad}) "
            f"as {encoding}{hint}"
        ) from None


def read_csv(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV with every value as text ("NA" stays "NA", ids keep leading zeros) and
    column names stripped of surrounding spaces. A UTF-8 BOM is accepted.

    Raises `InputError` (one line) for a missing, empty or undecodable file, or a
    malformed CSV."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a CSV file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(f"{path.name}: file is empty (no rows)")
    text = _decode(data, encoding, path)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name}: file is empty (no rows)") from None
    except pd.errors.ParserError as exc:
        msg = one_line(exc).replace("Error tokenizing data. C error: ", "")
        m = re.search(r"\bline (\d+)", msg)
        if m:
            raise InputError(f"{path.name}: malformed CSV at line {m.group(1)}: {msg}") from None
        m = re.search(r"EOF inside string starting at row (\d+)", msg)
        if m:  # pandas counts from 0 here, header included
            line = int(m.group(1)) + 1
            raise InputError(
                f"{path.name}: malformed CSV at line {line}: a quoted field is never closed"
            ) from None
        raise InputError(f"{path.name}: malformed CSV: {msg}") from None
    frame = frame.fillna("")
    names = [str(c).strip() for c in frame.columns]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"{path.name}: column '{name}' appears twice in the header")
        seen.add(name)
    frame.columns = names
    if len(frame) == 0:
        raise InputError(f"{path.name}: no rows (only a header)")
    return frame.reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str, role: str, path: Path) -> str:
    """The frame's column for a user-given name (matched after trimming spaces)."""
    wanted = str(name).strip()
    if wanted in frame.columns:
        return wanted
    cols = list(frame.columns)
    hint = ""
    close = difflib.get_close_matches(wanted, cols, n=1, cutoff=0.6) or [
        c for c in cols if c.lower() == wanted.lower()
    ]
    if close:
        hint = f"; did you mean '{close[0]}'?"
    elif len(cols) == 1 and any(sep in cols[0] for sep in (";", "\t", "|")):
        hint = "; the file has one column only: is it separated by something other than commas?"
    raise InputError(
        f"{path.name}: no {role} column '{wanted}'; the columns are {_quote_list(cols)}{hint}"
    )


# --------------------------------------------------------------------------- labels


def _tree_parts(value: str) -> list[str]:
    """Levels of a category tree like '["A >> B >> C"]' (brackets, quotes, spaces removed)."""
    text = str(value).strip()
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        return []
    return [" ".join(part.split()) for part in text.split(_TREE_SEP)]


def parse_category_tree(value: str, level: int) -> str | None:
    """Level `level` (1 = top) of a category tree such as
    '["Home Furnishing >> Bed Linen >> Bedsheets >> ..."]', or of a plain label.

    None when the tree is shallower than `level` or that level is empty. A deepest level
    cut off with "..." (as Flipkart does) is returned as it is."""
    if level < 1:
        raise ValueError(f"category level must be 1 or more, got {level}")
    parts = _tree_parts(value)
    if len(parts) < level:
        return None
    return parts[level - 1] or None


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
        """Read each time, so an admin's change (and a test's monkeypatch) applies at once."""
        allow = os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        hosts, networks = set(), []
        for item in os.environ.get(ALLOWLIST_ENV, "").split(","):
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
        env = os.environ.get("STUDIO_DOWNLOAD_CACHE_MB", "").strip()
        max_bytes = int(float(env) * 1024 * 1024) if env else DOWNLOAD_CACHE_MAX_BYTES
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


# --------------------------------------------------------------------------- report


@dataclass
class ImportReport:
    """What the import found, for the CLI (JSON) and for humans (`summary_lines`).

    All row numbers are 1-based data rows."""

    source: str = ""
    rows: int = 0
    labelled: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    #: one dict per row whose image could not be used: {row, column, value, reason}
    missing_images: list[dict[str, Any]] = field(default_factory=list)
    empty_texts: int = 0
    empty_text_rows: list[int] = field(default_factory=list)
    #: rows whose normalized text repeats an earlier row's (empty texts not counted)
    duplicate_texts: int = 0
    #: rows with neither text nor a usable image: kept but flagged `usable=False`
    unusable_rows: list[int] = field(default_factory=list)
    #: rows with no label although a label column was given (empty, or tree too shallow)
    unlabelled_rows: list[int] = field(default_factory=list)
    #: rows whose image cell is empty (no image given; not counted as missing)
    no_image_rows: list[int] = field(default_factory=list)
    text_columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    label_level: int | None = None
    image_column: str | None = None
    notes: list[str] = field(default_factory=list)
    cut_text_rows: list[int] = field(default_factory=list)  # rows whose text was cut to core.common.text.MAX_TEXT_CHARS

    @property
    def classes(self) -> list[str]:
        return sorted(self.per_class)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = asdict(self)
        out["classes"] = self.classes
        return out

    def summary_lines(self) -> list[str]:
        """A few short lines for the terminal or the app."""
        head = f"{Path(self.source).name or 'catalogue'}: {_plural(self.rows, 'row')}"
        if self.label_column is not None:
            head += f", {self.labelled} labelled, {_plural(len(self.per_class), 'class', 'classes')}"
            if self.per_class:
                lo, hi = min(self.per_class.values()), max(self.per_class.values())
                head += f" ({lo} rows each)" if lo == hi else f" ({lo}–{hi} rows per class)"
        lines = [head]
        problems = []
        if self.image_column is not None:
            n = len(self.missing_images)
            part = f"{_plural(n, 'image')} missing"
            if n:
                part += f" (rows {_rows_text([m['row'] for m in self.missing_images])})"
            problems.append(part)
        part = _plural(self.empty_texts, "empty text")
        if self.empty_texts:
            part += f" (rows {_rows_text(self.empty_text_rows)})"
        problems.append(part)
        problems.append(_plural(self.duplicate_texts, "duplicate text"))
        lines.append("; ".join(problems))
        if self.unlabelled_rows:
            lines.append(
                f"{_plural(len(self.unlabelled_rows), 'row')} without a label "
                f"(rows {_rows_text(self.unlabelled_rows)})"
            )
        if self.unusable_rows:
            lines.append(
                f"{_plural(len(self.unusable_rows), 'row')} with neither text nor image, "
                f"skipped (rows {_rows_text(self.unusable_rows)})"
            )
        for m in self.missing_images[:3]:
            lines.append(f"  row {m['row']}, column '{m['column']}': {m['reason']}")
        lines.extend(self.notes)
        return lines


# --------------------------------------------------------------------------- catalogue


@dataclass
class Catalogue:
    """One imported CSV: the original frame plus the model-ready columns, row-aligned.

    Row i of every list is CSV data row i + 1. Rows are never dropped: callers skip
    `usable[i] == False` (no text, no image) and `labels[i] is None` where they must,
    and say so (the report has the row numbers)."""

    source: Path
    frame: pd.DataFrame
    texts: list[str]
    labels: list[str | None]
    image_paths: list[Path | None]
    usable: list[bool]
    report: ImportReport
    text_cols: list[str] = field(default_factory=list)
    label_col: str | None = None
    label_level: int | None = None
    image_col: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """Sorted distinct labels (None excluded)."""
        return sorted({label for label in self.labels if label is not None})

    def labelled_mask(self) -> np.ndarray:
        """Boolean mask of rows that have a label."""
        return np.array([label is not None for label in self.labels], dtype=bool)

    def trainable_mask(self) -> np.ndarray:
        """Rows training can use: labelled and usable (text or image)."""
        return self.labelled_mask() & self.usable_mask()

    def usable_mask(self) -> np.ndarray:
        """Boolean mask of rows with text or a usable image (what prediction uses)."""
        return np.array(self.usable, dtype=bool)

    def subset(self, rows: Sequence[int]) -> "Catalogue":
        """The same catalogue restricted to `rows` (in that order), for splits and
        cross-validation; the import report still describes the whole file."""
        rows = [int(i) for i in rows]
        return replace(
            self,
            frame=self.frame.iloc[rows].reset_index(drop=True),
            texts=[self.texts[i] for i in rows],
            labels=[self.labels[i] for i in rows],
            image_paths=[self.image_paths[i] for i in rows],
            usable=[self.usable[i] for i in rows],
        )


def dedup_groups(texts: Sequence[str]) -> np.ndarray:
    """Integer group id per row; rows with the same normalized text share an id, so a
    grouped train/test split cannot put one text on both sides. Each empty text gets its
    own group (image-only rows are not duplicates of each other)."""
    ids: dict[str, int] = {}
    out = np.empty(len(texts), dtype=np.int64)
    next_id = 0
    for i, text in enumerate(texts):
        key = normalize_text(text)
        if not key:
            out[i] = next_id
            next_id += 1
            continue
        if key not in ids:
            ids[key] = next_id
            next_id += 1
        out[i] = ids[key]
    return out


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm import tqdm  # only when asked: keeps plain imports fast

    return tqdm(iterable, total=total, desc=desc, unit="img", file=sys.stderr, leave=False)


def _verify_image(path: Path) -> str | None:
    """None if the image decodes, else the reason."""
    try:
        open_image(path, what=str(path))
    except ImageDecodeError as exc:
        return exc.reason
    except InputError as exc:  # pragma: no cover - open_image only raises ImageDecodeError
        return one_line(exc)
    return None


def _resolve_images(
    values: list[str],
    *,
    column: str,
    base_dir: Path,
    check_images: bool,
    progress: bool,
    confine_images: bool,
) -> tuple[list[Path | None], list[dict[str, Any]], list[int]]:
    """Image path per row (None = no usable image), the problems, and rows with no value."""
    paths: list[Path | None] = [None] * len(values)
    problems: dict[int, str] = {}
    no_image: list[int] = []
    base_resolved = base_dir.resolve()

    # 1. URLs: download each distinct URL once (threads: it's network-bound).
    urls = sorted({v for v in values if v.lower().startswith(("http://", "https://"))})
    fetched: dict[str, Path | str] = {}
    if urls:
        def fetch(url: str) -> tuple[str, Path | str]:
            try:
                return url, download_url(url)
            except DownloadError as exc:
                return url, exc.reason

        with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
            for url, result in _progress(
                pool.map(fetch, urls), len(urls), "downloading images", progress
            ):
                fetched[url] = result

    # 2. Local paths (and downloaded files).
    for i, value in enumerate(values):
        if not value:
            no_image.append(i + 1)
            continue
        if value in fetched:
            result = fetched[value]
            if isinstance(result, str):
                problems[i] = result
            else:
                paths[i] = result
            continue
        m = _SCHEME.match(value)
        if m and len(m.group(1)) > 1:  # "C://..." is a Windows drive, not a scheme
            problems[i] = f"unsupported URL scheme '{m.group(1)}'"
            continue
        candidate = Path(value).expanduser()
        if not candidate.is_absolute():
            candidate = base_dir / candidate
        elif confine_images:
            problems[i] = "absolute image paths are not allowed here"
            continue
        try:  # a long description given as an image name raises (ENAMETOOLONG) instead of False
            if confine_images:
                try:
                    candidate.resolve().relative_to(base_resolved)
                except ValueError:
                    problems[i] = "image path points outside the image folder"
                    continue
            if not candidate.is_file():
                problems[i] = (
                    f"is a folder, not an image file: {candidate}"
                    if candidate.is_dir()
                    else f"file not found: {candidate}"
                )
                continue
        except OSError as exc:
            problems[i] = f"not a usable file name ({exc.strerror or 'unreadable'}): {value[:60]}…"
            continue
        paths[i] = candidate

    # 3. Decode each distinct file once to prove it is a usable image.
    if check_images:
        distinct = sorted({p for p in paths if p is not None}, key=str)
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
            reasons = dict(
                zip(
                    distinct,
                    _progress(pool.map(_verify_image, distinct), len(distinct), "checking images", progress),
                )
            )
        for i, p in enumerate(paths):
            if p is not None and reasons.get(p):
                problems[i] = reasons[p]
                paths[i] = None

    missing = [
        {"row": i + 1, "column": column, "value": values[i], "reason": reason}
        for i, reason in sorted(problems.items())
    ]
    return paths, missing, no_image


def load_catalogue(
    path: str | Path,
    *,
    text_cols: Sequence[str],
    label_col: str | None = None,
    label_level: int | None = None,
    image_col: str | None = None,
    image_dir: str | Path | None = None,
    encoding: str = "utf-8",
    require_labels: bool = False,
    check_images: bool = True,
    progress: bool = False,
    confine_images: bool = False,
) -> Catalogue:
    """Import a catalogue CSV mapped by column names.

    text = `text_cols` joined with `join_text`; label = `label_col` (at `label_level` of a
    category tree when given); image = `image_col` resolved as URL (downloaded, cached),
    absolute path, or path relative to `image_dir` (default: the CSV's folder). Broken or
    missing images are reported, never fatal. `require_labels` (training) demands at least
    two classes. `confine_images` (for untrusted uploads) refuses absolute paths and paths
    that leave the image folder.
    """
    source = Path(path).expanduser()
    if isinstance(text_cols, str):
        text_cols = [text_cols]
    text_cols = list(text_cols)
    if not text_cols and not image_col:
        raise InputError(f"{source.name}: give at least one text column or an image column")
    if label_level is not None and label_col is None:
        raise InputError("--label-level needs a label column")
    if label_level is not None and int(label_level) < 1:
        raise InputError(f"--label-level must be 1 or more, got {label_level}")
    if require_labels and label_col is None:
        raise InputError(f"{source.name}: training needs a label column")

    frame = read_csv(source, encoding=encoding)
    name = source.name
    n = len(frame)

    text_names = [_column(frame, c, "text", source) for c in text_cols]
    label_name = _column(frame, label_col, "label", source) if label_col is not None else None
    image_name = _column(frame, image_col, "image", source) if image_col is not None else None
    notes: list[str] = []

    # Texts.
    if text_names:
        cells = frame[text_names].to_numpy(dtype=object)
        texts = [join_text(row) for row in cells]
    else:
        texts = [""] * n
    empty_rows = [i + 1 for i, t in enumerate(texts) if not t]
    seen: set[str] = set()
    duplicates = 0
    for t in texts:
        key = normalize_text(t)
        if not key:
            continue
        if key in seen:
            duplicates += 1
        seen.add(key)

    # Labels.
    labels: list[str | None] = [None] * n
    if label_name is not None:
        raw = [str(v) for v in frame[label_name].tolist()]
        if label_level is not None:
            level = int(label_level)
            depths = [len(_tree_parts(v)) for v in raw if v.strip()]
            if not depths:
                raise InputError(f"{name}: column '{label_name}' has no labels (every value is empty)")
            deepest = max(depths)
            if level > deepest:
                raise InputError(
                    f"{name}: --label-level {level} but the deepest category tree in column "
                    f"'{label_name}' has {_plural(deepest, 'level')}"
                )
            labels = [parse_category_tree(v, level) for v in raw]
        else:
            labels = [(" ".join(v.split()) or None) for v in raw]
            trees = sum(1 for v in labels if v and _TREE_SEP in v)
            if trees and trees >= 0.5 * sum(1 for v in labels if v):
                notes.append(
                    f"labels in column '{label_name}' look like category trees ('A >> B'); "
                    "pass a label level to use one level of the tree"
                )
    per_class_counts: dict[str, int] = {}
    for label in labels:
        if label is not None:
            per_class_counts[label] = per_class_counts.get(label, 0) + 1
    per_class = dict(sorted(per_class_counts.items(), key=lambda kv: (-kv[1], kv[0])))
    if require_labels:
        if not per_class:
            raise InputError(
                f"{name}: column '{label_name}' has no labels: training needs at least two classes"
            )
        if len(per_class) < 2:
            only = next(iter(per_class))
            raise InputError(
                f"{name}: only one class '{only}' in column '{label_name}': "
                "training needs at least two"
            )
        tiny = [c for c, k in per_class.items() if k < 2]
        if tiny:
            notes.append(
                f"{_plural(len(tiny), 'class', 'classes')} with a single row: {_quote_list(tiny, 5)}"
            )
    unlabelled = [i + 1 for i, v in enumerate(labels) if v is None] if label_name else []

    # Images.
    image_paths: list[Path | None] = [None] * n
    missing: list[dict[str, Any]] = []
    no_image_rows: list[int] = []
    if image_name is not None:
        base_dir = Path(image_dir).expanduser() if image_dir is not None else source.parent
        if image_dir is not None and not base_dir.is_dir():
            raise InputError(f"image folder not found: {base_dir}")
        values = [str(v).strip() for v in frame[image_name].tolist()]
        image_paths, missing, no_image_rows = _resolve_images(
            values,
            column=image_name,
            base_dir=base_dir,
            check_images=check_images,
            progress=progress,
            confine_images=confine_images,
        )
        local = [
            i for i, v in enumerate(values)
            if v and not v.lower().startswith(("http://", "https://"))
        ]
        if local and all(image_paths[i] is None for i in local) and len(local) > 1:
            notes.append(
                f"none of the {len(local)} local images in column '{image_name}' could be used "
                f"(looked under {base_dir}): is the image folder right?"
            )

    usable = [bool(t) or p is not None for t, p in zip(texts, image_paths)]
    report = ImportReport(
        source=str(source),
        rows=n,
        labelled=sum(1 for v in labels if v is not None),
        per_class=per_class,
        missing_images=missing,
        empty_texts=len(empty_rows),
        empty_text_rows=empty_rows,
        duplicate_texts=duplicates,
        unusable_rows=[i + 1 for i, ok in enumerate(usable) if not ok],
        unlabelled_rows=unlabelled,
        no_image_rows=no_image_rows,
        text_columns=text_names,
        label_column=label_name,
        label_level=int(label_level) if label_level is not None else None,
        image_column=image_name,
        notes=notes,
    )
    catalogue = Catalogue(
        source=source,
        frame=frame,
        texts=texts,
        labels=labels,
        image_paths=image_paths,
        usable=usable,
        report=report,
        text_cols=text_names,
        label_col=label_name,
        label_level=report.label_level,
        image_col=image_name,
    )

    cap_catalogue_texts(catalogue)
    return catalogue


def cap_catalogue_texts(catalogue: Catalogue) -> list[int]:
    """Cut every over-long row text of `catalogue` in place and note it once in its report;
    returns the 1-based rows ever cut (kept in the report, so a second call — load_catalogue
    caps, then import or batch asks — gives the same rows and notes nothing twice)."""
    cut_rows = []
    for i, text in enumerate(catalogue.texts):
        if len(text) > MAX_TEXT_CHARS:
            catalogue.texts[i], _ = cut_text(text)
            cut_rows.append(i + 1)
    catalogue.report.cut_text_rows = sorted({*catalogue.report.cut_text_rows, *cut_rows})
    if cut_rows:
        catalogue.report.notes.append(f"{len(cut_rows):,} description(s) longer than {MAX_TEXT_CHARS:,} characters "
                                      f"were cut to that length (rows {_rows_text(cut_rows)})")
    return catalogue.report.cut_text_rows
