"""Payloads a hostile submitter sends, built cheaply for tests.

:func:`write_npz_bomb` writes a dataset .npz whose ``x`` member declares
``declared_bytes`` of zeros once decompressed, while the file stays about a
thousandth of that. The deflate stream is assembled from one compressed
chunk of zeros repeated (each chunk ends in a full flush, so it is
byte-aligned and refers to nothing before it), and the zip around it is
written by hand: the test process never holds the decompressed bytes, nor
spends the time to compress them. The CRC is the true one, so a reader that
decompresses the member to the end accepts it: a real bomb, not a corrupt file.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

CHUNK = 1 << 20
#: ``x`` rows are this wide when ``declared_bytes`` is a multiple of it (so the
#: item count stays modest and the byte limit is the one a bomb meets)
ROW = 4096


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    """A version 1.0 .npy header for a C-order array (what numpy.save writes)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    text += " " * (pad % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _zero_stream(n: int) -> bytes:
    """Raw deflate blocks (none final) that inflate to ``n`` zero bytes."""
    whole, rest = divmod(n, CHUNK)
    parts = []
    if whole:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append((c.compress(bytes(CHUNK)) + c.flush(zlib.Z_FULL_FLUSH)) * whole)
    if rest:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append(c.compress(bytes(rest)) + c.flush(zlib.Z_FULL_FLUSH))
    return b"".join(parts)


def npz_member(name: str, header: bytes, zero_bytes: int) -> tuple[bytes, bytes]:
    """(local header + data, central directory entry) of one deflated member: ``header`` then zeros.

    Offsets in the central entry are patched by :func:`write_zip`.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = _zero_stream(zero_bytes)
    body = head + zeros + b"\x03\x00"  # the final (empty) block
    crc = zlib.crc32(header)
    # the CRC of header + zeros: continue from the header's CRC over the zeros
    whole, rest = divmod(zero_bytes, CHUNK)
    zchunk = bytes(CHUNK)
    for _ in range(whole):
        crc = zlib.crc32(zchunk, crc)
    if rest:
        crc = zlib.crc32(bytes(rest), crc)
    size = len(header) + zero_bytes
    return _entry(name.encode(), body, crc, size)


def _entry(fname: bytes, body: bytes, crc: int, size: int) -> tuple[bytes, bytes]:
    zip64 = size >= 0xFFFFFFFF or len(body) >= 0xFFFFFFFF
    extra = struct.pack("<HHQQ", 1, 16, size, len(body)) if zip64 else b""
    usize, csize = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (size, len(body))
    version = 45 if zip64 else 20
    local = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", version, 0, 8, 0, 0x21, crc, csize, usize, len(fname), len(extra)
    ) + fname + extra + body
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02", version, version, 0, 8, 0, 0x21, crc, csize, usize, len(fname), len(extra), 0, 0, 0, 0, 0,
    ) + fname + extra
    return local, central


def write_zip(path: Path, members: list[tuple[bytes, bytes]]) -> None:
    """A zip of members from :func:`npz_member` (local offsets patched into their central entries)."""
    with open(path, "wb") as f:
        centrals = []
        for local, central in members:
            offset = f.tell()
            f.write(local)
            centrals.append(central[:42] + struct.pack("<I", offset) + central[46:])
        cd_start = f.tell()
        for central in centrals:
            f.write(central)
        cd_size = f.tell() - cd_start
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(centrals), len(centrals), cd_size, cd_start, 0))


def write_npz_bomb(path: Path | str, declared_bytes: int) -> Path:
    """Write a dataset .npz whose ``x`` (uint8 zeros) declares ``declared_bytes`` once decompressed.

    ``x`` is ``(declared_bytes // 4096, 4096)`` when that divides evenly, else
    flat. The file is about ``declared_bytes / 1000`` bytes (0.4 MiB for 384
    MiB declared); writing it costs a CRC pass over the zeros, no allocation
    of them. Returns the path.
    """
    if declared_bytes < 1:
        raise ValueError("declared_bytes must be at least 1")
    shape = (declared_bytes // ROW, ROW) if declared_bytes % ROW == 0 else (declared_bytes,)
    path = Path(path)
    write_zip(path, [npz_member("x.npy", npy_header(shape), declared_bytes)])
    return path
