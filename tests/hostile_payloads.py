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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of ``width`` x ``height`` black pixels, about a thousandth of its pixel count in size.

    Its zlib stream is built like :func:`write_npz_bomb`'s (the Adler-32 of
    n zeros is ``(n % 65521) << 16 | 1``), so nothing is compressed here.
    """
    n = height * (width + 1)  # each row: filter byte 0, then the pixels
    stream = b"\x78\x01" + _zero_stream(n) + b"\x03\x00" + struct.pack(">I", ((n % 65521) << 16) | 1)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")


def pdf_with_pages(*sizes: tuple[float, float]) -> bytes:
    """A minimal valid PDF whose pages are blank and of the given (width, height) in points.

    A 20000 x 20000 point page is a few hundred bytes and renders at 200 dpi
    to 55,556 x 55,556 pixels (3 gigapixels).
    """
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(len(sizes)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(sizes)} >>".encode())
    for w, h in sizes:
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:g} {h:g}] /Resources << >> >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
