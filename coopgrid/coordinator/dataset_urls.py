"""Datasets the coordinator reads from URLs its operator allows, not through the submitter.

A dataset already sits in object storage or on a web server near the grid; sending it through the
submitter's link and back is what ``coopgrid submit --dataset-url`` avoids. But a URL fetched on a
submitter's word is a server-side request: unchecked, any token could make the coordinator read its
cloud's metadata service, an admin port on loopback or a file of its own. So:

* nothing is read unless the operator allowed a prefix the URL starts with (``--dataset-urls``,
  ``COOPGRID_DATASET_URLS``); the comparison is made on the normalised URL (scheme, host, port and
  the decoded path), and a path with ``.``/``..`` segments, encoded slashes or backslashes is refused
  rather than normalised, since the server at the other end may read it differently;
* redirects are not followed (a redirect is the one way an allowed server sends a reader elsewhere);
* ``file://`` prefixes name directories of the coordinator's own (a shared mount); a symlink leading
  out of an allowed directory is refused;
* the transfer stops at ``max_upload_bytes``, like an upload, and the file is read through the same
  dataset limits; only tabular and text files (CSV, Parquet, JSONL, text) and ``.npz`` datasets are
  read here: images and PDFs are decoded on the submitter's machine, not on the coordinator.

The result is a dataset blob like an uploaded one: granted to the caller, then named by a job's
``dataset`` / ``shards`` and checked again at submission.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import httpx

from coopgrid.blobs.base import BlobStore
from coopgrid.coordinator.summary import put_file
from coopgrid.datasets import CSV_SUFFIXES, PARQUET_SUFFIXES, TEXT_SUFFIXES
from coopgrid.errors import ConfigError, Forbidden, InvalidInput, TooLarge
from coopgrid.limits import DatasetLimits

SCHEMES = ("http", "https", "file")
DEFAULT_PORTS = {"http": 80, "https": 443, "file": None}
#: suffixes read here; anything else is the submitter's to read and upload
READABLE = tuple(sorted(CSV_SUFFIXES | PARQUET_SUFFIXES | TEXT_SUFFIXES | {".jsonl", ".npz"}))
MAX_URL_LENGTH = 2048
#: seconds to connect, and to wait for each piece of the body
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: seconds one whole transfer may take (256 MiB at under 0.5 MB/s is a server not worth waiting for)
MAX_FETCH_SECONDS = 600.0


@dataclass(frozen=True)
class Place:
    """A URL reduced to what is compared: scheme, host, port and the decoded path."""

    scheme: str
    host: str
    port: int | None
    path: str

    def within(self, prefix: Place) -> bool:
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        if prefix.path.endswith("/"):
            return self.path.startswith(prefix.path)
        return self.path == prefix.path or self.path.startswith(prefix.path + "/")


def place_of(url: str, what: str = "the dataset URL") -> Place:
    """``url`` normalised for comparison; InvalidInput saying what is wrong with it otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"{what} must be a URL of 1 to {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidInput(f"{what} {url!r} holds spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{what} {url!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidInput(f"{what} {url!r} must start with {', '.join(s + '://' for s in SCHEMES)}")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"{what} must not carry credentials (user:password@); the coordinator reads public or "
                           "presigned URLs only")
    host = (parts.hostname or "").lower()
    if scheme == "file":
        if host not in ("", "localhost") or port is not None:
            raise InvalidInput(f"{what} {url!r}: a file:// URL names a path on the coordinator (file:///PATH)")
        host = ""
    elif not host:
        raise InvalidInput(f"{what} {url!r} has no host")
    raw = parts.path or "/"
    lowered = raw.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in raw or "%00" in lowered:
        raise InvalidInput(f"{what} {url!r} has an encoded slash, backslash or NUL in its path")
    path = unquote(raw)
    # as servers read a segment: decoded twice by some, ';params' dropped by others (/..;/ on Tomcat)
    if any(unquote(seg).split(";")[0] in (".", "..") for seg in path.split("/")):
        raise InvalidInput(f"{what} {url!r} has '.' or '..' segments in its path; give the path itself")
    return Place(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], path)


def parse_prefixes(spec: str | None) -> tuple[Place, ...]:
    """The operator's comma-separated prefixes (``--dataset-urls``); a ConfigError naming a bad one."""
    out = []
    for item in (spec or "").split(","):
        if item := item.strip():
            try:
                out.append(place_of(item, "a --dataset-urls prefix"))
            except InvalidInput as exc:
                raise ConfigError(exc.message) from None
    return tuple(out)


class DatasetUrls:
    """Checks and reads dataset URLs under the operator's prefixes."""

    def __init__(self, prefixes: tuple[Place, ...], max_bytes: int) -> None:
        self.prefixes = prefixes
        self.max_bytes = max_bytes

    def check(self, url: str) -> Place:
        """The URL's place if the operator allows it; Forbidden (or InvalidInput) saying why not."""
        place = place_of(url)
        if not self.prefixes:
            raise Forbidden(
                "this coordinator reads no dataset URLs: upload the dataset (coopgrid submit --dataset PATH), or ask "
                "its operator to allow the URL's prefix (coopgrid coordinator --dataset-urls)", url=url,
            )
        if not any(place.within(p) for p in self.prefixes):
            raise Forbidden(
                f"the coordinator may not read {url}: it reads dataset URLs only under the prefixes its operator "
                "allowed (--dataset-urls); upload the dataset instead, or ask for the prefix", url=url,
            )
        suffix = posixpath.splitext(place.path)[1].lower()
        if suffix not in READABLE:
            raise InvalidInput(
                f"{url}: the coordinator reads only {', '.join(READABLE)} files from URLs (images and PDFs are "
                "decoded on the submitter's machine: coopgrid submit --dataset DIR)", url=url,
            )
        return place

    def fetch(self, url: str, into: Path) -> Path:
        """Copy the allowed ``url`` into a file in directory ``into`` (its name ends as the URL's does)."""
        place = self.check(url)
        # named as at its source: items' ids are made from the file name (a.csv:3), as if uploaded
        stem, suffix = posixpath.splitext(posixpath.basename(place.path))
        dest = into / (re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:100].lstrip(".") + suffix.lower())
        with dest.open("wb") as out:
            if place.scheme == "file":
                self._copy_file(place, url, out)
            else:
                self._download(url, place, out)
        return dest

    def _copy_file(self, place: Place, url: str, out: IO[bytes]) -> None:
        allowed = [Path(p.path).resolve() for p in self.prefixes if p.scheme == "file" and place.within(p)]
        try:
            fd = os.open(place.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise InvalidInput(f"{url}: no such file on the coordinator", url=url) from None
        except OSError as exc:  # ELOOP: the file itself is a symlink
            raise Forbidden(f"{url} is a symlink or cannot be opened ({exc.strerror}); give the file itself",
                            url=url) from None
        with os.fdopen(fd, "rb") as src:
            # judged by what was opened, not by the path before: a directory on the way swapped for a
            # symlink in between leads nowhere else
            opened = Path(f"/proc/self/fd/{fd}")
            real = Path(os.readlink(opened)) if opened.exists() else Path(place.path).resolve()
            if not any(real == a or real.is_relative_to(a) for a in allowed):
                raise Forbidden(f"{url} leads (through a symlink) out of the directories the operator allowed", url=url)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInput(f"{url}: not a regular file on the coordinator", url=url)
            size = 0
            while chunk := src.read(1 << 20):  # a file still growing stops at the limit, not at the disk's end
                size += len(chunk)
                if size > self.max_bytes:
                    raise self.too_large(url, size)
                out.write(chunk)

    def _download(self, url: str, place: Place, out: IO[bytes]) -> None:
        # the URL httpx will request must be the one checked: two parsers reading one string differently
        # is how allow-lists are walked past
        asked = httpx.URL(url)
        if (asked.scheme, asked.host, asked.port or DEFAULT_PORTS[asked.scheme], unquote(asked.path)) != (
            place.scheme, place.host, place.port, place.path
        ):
            raise InvalidInput(f"{url} reads as two different URLs; write it plainly", url=url)
        deadline = time.monotonic() + MAX_FETCH_SECONDS
        name = shown(url)
        try:
            # the bytes as stored: a Content-Encoding would be unpacked a network read at a time, each
            # read of a nested gzip growing a thousandfold before any limit could see it
            with httpx.stream("GET", url, follow_redirects=False, timeout=TIMEOUT,
                              headers={"accept-encoding": "identity"}) as response:
                if response.is_redirect:
                    raise InvalidInput(f"{name} redirects elsewhere; the coordinator does not follow redirects: give "
                                       "the final URL (under an allowed prefix)", url=name)
                if response.status_code != 200:
                    raise InvalidInput(f"{name} answered HTTP {response.status_code}; nothing was read", url=name,
                                       upstream_status=response.status_code)
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise InvalidInput(f"{name} is sent with Content-Encoding {encoding!r}; the coordinator reads files "
                                       "as stored (store it without one)", url=name)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise self.too_large(name, int(declared))
                size = 0
                for chunk in response.iter_raw():  # each network read as it comes: the deadline is seen
                    size += len(chunk)
                    if time.monotonic() > deadline:  # a server trickling bytes holds one of few slots
                        raise InvalidInput(f"{name} took over {MAX_FETCH_SECONDS:.0f} s to send; nothing was kept",
                                           url=name)
                    if size > self.max_bytes:
                        raise self.too_large(name, size)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise InvalidInput(f"the coordinator could not read {name} ({type(exc).__name__})", url=name) from None

    def too_large(self, url: str, size: int) -> TooLarge:
        return TooLarge(
            f"{url} holds more than {self.max_bytes} bytes (max_upload_bytes, the largest shard): split it into "
            f"files below that and give each with its own --dataset-url", url=url, limit=self.max_bytes,
            declared=size,
        )


def shown(url: str) -> str:
    """``url`` as logs and messages show it: without its query and fragment (a presigned URL's
    signature is a credential)."""
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl()


def scratch(data_dir: Path) -> tempfile.TemporaryDirectory[str]:
    """A directory for one fetch, on the data dir's disk (a dataset may be too big for /tmp)."""
    base = data_dir / "fetch"
    base.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=base)


def dataset_blob(urls: DatasetUrls, url: str, blobs: BlobStore, limits: DatasetLimits, data_dir: Path) -> dict[str, Any]:
    """Read the allowed ``url`` as a dataset and store it as a dataset blob (.npz), as an upload would be.

    An .npz is stored as it came (submission checks it, as it checks an upload); any other file is read
    as items through ``limits`` and packed. Holds one file at a time."""
    from coopgrid.dataset_files import load_items

    with scratch(data_dir) as tmp:
        path = urls.fetch(url, Path(tmp))
        if path.suffix == ".npz":
            items, kind = None, None
        else:
            dataset = load_items(path, limits=limits)
            items, kind = len(dataset), dataset.kind
            packed = path.with_name(path.name + ".npz")
            packed.write_bytes(dataset.to_npz())
            del dataset
            path.unlink()
            path = packed
        size = path.stat().st_size
        if size > urls.max_bytes:
            raise urls.too_large(url, size)
        digest = put_file(blobs, path)
    return {"sha256": digest, "size": size, "items": items, "kind": kind, "url": url}
