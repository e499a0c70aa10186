"""The pieces /metrics is gzipped from (``monitor.metrics.deflate``) and the tables that keep
every tenant's lines by family (``monitor.metrics.tables``), against plain models: zlib's own
CRC-32 and decompression, and a dict of the lines each tenant should have."""

from __future__ import annotations

import gzip
import zlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.metrics import tables
from monitor.metrics.deflate import Piece, compress, crc32_combine, gzip_stream
from monitor.metrics.tables import FamilyTables

texts = st.lists(st.binary(max_size=3000) | st.sampled_from([b"", b"a" * 70_000]), max_size=8)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000), st.binary(max_size=5000))
def test_crc32_combine_is_the_crc_of_the_concatenation(first: bytes, second: bytes) -> None:
    combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert combined == zlib.crc32(first + second)


@settings(max_examples=100, deadline=None)
@given(texts)
def test_pieces_compressed_apart_make_one_valid_gzip_member(parts: list[bytes]) -> None:
    stream = b"".join(gzip_stream(map(compress, parts)))
    assert gzip.decompress(stream) == b"".join(parts)  # checks the CRC-32 and the length
    single = zlib.decompressobj(16 + zlib.MAX_WBITS)  # what stops after one member
    assert single.decompress(stream) == b"".join(parts)
    assert single.eof and not single.unused_data


FAMILIES = ("first", "second")
PEOPLE = ("t1", "t2", "t3", "t4", "t5", "t6")

puts = st.lists(
    st.tuples(
        st.sampled_from(PEOPLE),
        st.lists(st.sampled_from(FAMILIES), unique=True),
        st.dictionaries(st.sampled_from(FAMILIES), st.integers(0, 3)),
        st.booleans(),
    ),
    max_size=30,
)


def lines(tenant: str, family: str, version: int) -> bytes:
    """0 lines for version 0; the same length for versions 1 and 2 (a changed timestamp)."""
    return b"".join(f"{family}{{{tenant}}} {version} {n}\n".encode() for n in range(version))


def unzipped(pieces: list[Piece]) -> bytes:
    return gzip.decompress(b"".join(gzip_stream(pieces)))


@settings(max_examples=150, deadline=None)
@given(puts)
def test_tables_hold_the_last_lines_put_for_each_tenant_and_family(
    sequence: list[tuple[str, list[str], dict[str, int], bool]],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tables, "CELL_TENANTS", 2)
        table = FamilyTables(FAMILIES)
    model: dict[tuple[str, str], bytes] = {}
    for tenant, families, versions, scrape in sequence:
        table.put(tenant, families, {f: lines(tenant, f, v) for f, v in versions.items()})
        for family in families:
            model[tenant, family] = lines(tenant, family, versions.get(family, 0))
        if scrape:  # keeps compressed pieces for the next puts to invalidate
            for family in FAMILIES:
                table.compressed(family)
        for family in FAMILIES:
            expected = b"".join(text for (_, f), text in model.items() if f == family)
            plain = table.plain(family, head=b"# head\n", tail=b"# tail\n")
            assert plain.startswith(b"# head\n") and plain.endswith(b"# tail\n")
            assert Counter(plain.splitlines()[1:-1]) == Counter(expected.splitlines())
            assert unzipped(table.compressed(family)) == plain[7:-7]
        assert table.tenants() == len({tenant for (tenant, _), text in model.items() if text})


def test_a_piece_compressed_while_its_lines_change_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = FamilyTables(FAMILIES)
    table.put("t1", FAMILIES, {"first": b"old\n"})

    def compress_during_a_change(text: bytes) -> Piece:
        piece = compress(text)
        table.put("t1", FAMILIES, {"first": b"new\n"})  # another thread, meanwhile
        return piece

    monkeypatch.setattr(tables, "compress", compress_during_a_change)
    assert unzipped(table.compressed("first")) == b"old\n"  # the scrape that began before
    monkeypatch.setattr(tables, "compress", compress)
    assert unzipped(table.compressed("first")) == b"new\n"


def test_a_tenant_without_lines_gives_its_slot_back() -> None:
    table = FamilyTables(FAMILIES)
    table.put("t1", FAMILIES, {"first": b"1\n", "second": b"1\n"})
    table.put("t2", FAMILIES, {"first": b"2\n"})
    table.put("t1", ["first"], {})
    assert table.tenants() == 2
    table.put("t1", ["second"], {})
    assert table.tenants() == 1
    table.put("t3", FAMILIES, {"first": b"3\n"})  # takes t1's slot: first in the cell
    assert table.plain("first", head=b"", tail=b"") == b"3\n2\n"
