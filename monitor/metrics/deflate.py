"""One gzip stream (RFC 1952) assembled from pieces compressed separately.

``/metrics`` of a big fleet is tens of megabytes of text, and compressing all of it at every
scrape costs more than the scrape's budget, while little of it changed since the last scrape.
So the text is compressed in pieces (``compress``: raw deflate blocks, ended by a sync flush,
so each piece starts on a byte boundary and refers to nothing before it), each kept until its
text changes, and a scrape concatenates them (``gzip_stream``) between a gzip header and a
final empty block. The trailer needs the CRC-32 of the whole text: each piece keeps its own,
and ``gzip_stream`` combines them (zlib's ``crc32_combine``, which Python's ``zlib`` does not
offer, written here after zlib 1.2.12's algorithm: multiplications modulo the CRC polynomial).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

LEVEL = 1
"""Fast: the exposition shrinks ~15 times at level 1; higher levels cost more CPU for a few
percent."""

_POLY = 0xEDB88320  # CRC-32 (ISO-HDLC), bit-reversed
_ONE = 1 << 31  # the polynomial 1 in zlib's reflected representation
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no time, OS unknown
_FINAL_EMPTY_BLOCK = b"\x03\x00"


def _multiply(a: int, b: int) -> int:
    """a times b modulo the CRC-32 polynomial (zlib's ``multmodp``)."""
    m = _ONE
    product = 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _squares() -> tuple[int, ...]:
    """x^(2^k) modulo the polynomial, k = 0..31 (zlib's ``x2n_table``)."""
    power = _ONE >> 1  # x^1
    table = []
    for _ in range(32):
        table.append(power)
        power = _multiply(power, power)
    return tuple(table)


_X2N = _squares()


def _shift(size: int) -> int:
    """x^(8 * size) modulo the polynomial: what a CRC is multiplied by to move it past
    ``size`` more bytes (zlib's ``x2nmodp(size, 3)``)."""
    power = _ONE
    k = 3
    while size:
        if size & 1:
            power = _multiply(_X2N[k & 31], power)
        size >>= 1
        k += 1
    return power


@dataclass(frozen=True, slots=True)
class Piece:
    """Text compressed on its own: raw deflate blocks ending on a byte boundary (sync flush),
    never the final block; with the CRC-32 and size of the text."""

    data: bytes
    crc: int
    size: int
    shift: int  # _shift(size), kept so that combining costs one multiplication


def compress(text: bytes) -> Piece:
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Piece(data, zlib.crc32(text), len(text), _shift(len(text)))


def crc32_combine(crc1: int, crc2: int, size2: int) -> int:
    """The CRC-32 of A + B from crc32(A), crc32(B) and len(B)."""
    return _multiply(_shift(size2), crc1) ^ crc2


def gzip_stream(pieces: Iterable[Piece]) -> list[bytes]:
    """One gzip member holding the pieces' texts in order, as a list of byte strings."""
    out = [_HEADER]
    crc = 0
    size = 0
    for piece in pieces:
        out.append(piece.data)
        crc = _multiply(piece.shift, crc) ^ piece.crc if crc else piece.crc
        size += piece.size
    out.append(_FINAL_EMPTY_BLOCK)
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return out


def inflate(piece: Piece) -> bytes:
    """The text of ``piece``."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(piece.data)
