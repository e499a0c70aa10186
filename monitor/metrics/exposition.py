"""The text expositions of ``/metrics`` (Prometheus text 0.0.4 and OpenMetrics 1.0), written
from prepared bytes.

A fleet of 10,000 tenants exports over half a million samples, and formatting them costs
seconds (``prometheus_client.generate_latest`` spends it in ``sample_line``), while a tenant's
samples change once per poll at most. So ``Telemetry`` renders each tenant's samples to lines
here when they change (``lines_by_name``) into ``FamilyTables``, and a scrape only joins the
prepared bytes of every tenant under one header per family (``plain_chunks``), or the
compressed copies of them it kept (``gzip_chunks``). Both formats share the sample lines: they
differ in the ``# TYPE`` name of counters, the escaping of help texts and the final
``# EOF``. ``KeywatchCollector`` stays the reference: tests check that both agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.samples import Sample

from monitor.metrics.deflate import Piece, compress, gzip_stream
from monitor.metrics.names import SPECS, MetricSpec
from monitor.metrics.tables import FamilyTables

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Lines = Mapping[str, bytes]
"""Metric name -> the sample lines of one tenant (or of the process) for that name."""


def _value(value: float) -> str:
    """A sample value as Prometheus' Go client writes it (``floatToGoString``)."""
    number = float(value)
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if math.isnan(number):
        return "NaN"
    text = repr(number)
    dot = text.find(".")
    if number > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def sample_line(sample: Sample) -> str:
    labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(sample.labels.items()))
    braces = f"{{{labels}}}" if labels else ""
    return f"{sample.name}{braces} {_value(sample.value)}\n"


def lines_by_name(series: Iterable[tuple[str, Sequence[Sample]]]) -> dict[str, bytes]:
    """The sample lines of (metric name, samples) pairs, by metric name."""
    return {
        name: "".join(map(sample_line, samples)).encode() for name, samples in series if samples
    }


def _header(spec: MetricSpec, *, openmetrics: bool) -> bytes:
    if openmetrics:
        name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        text = spec.help.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    else:
        name = spec.name
        text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {text}\n# TYPE {name} {spec.kind}\n".encode()


_HEADERS = {
    openmetrics: {name: _header(spec, openmetrics=openmetrics) for name, spec in SPECS.items()}
    for openmetrics in (False, True)
}
_COMPRESSED_HEADERS = {
    openmetrics: {name: compress(header) for name, header in headers.items()}
    for openmetrics, headers in _HEADERS.items()
}
_EOF = b"# EOF\n"
_COMPRESSED_EOF = compress(_EOF)


def plain_chunks(tables: FamilyTables, process: Lines, *, openmetrics: bool) -> Iterator[bytes]:
    """One exposition, a family at a time: every family of ``SPECS`` in order, its header, the
    lines every tenant holds for it in ``tables``, then ``process``' (the process-wide lines).
    Each family is joined when it is asked for, so a scrape never holds more than one
    family's copy (a 10,000-tenant exposition is ~60 MB)."""
    headers = _HEADERS[openmetrics]
    for name in SPECS:
        yield tables.plain(name, head=headers[name], tail=process.get(name, b""))
    if openmetrics:
        yield _EOF


def gzip_chunks(tables: FamilyTables, process: Lines, *, openmetrics: bool) -> list[bytes]:
    """The exposition of ``plain_chunks`` as one gzip stream: the headers were compressed
    once, each cell of tenants' lines when it last changed (``FamilyTables.compressed``), and
    the process-wide lines now."""
    headers = _COMPRESSED_HEADERS[openmetrics]
    pieces: list[Piece] = []
    for name in SPECS:
        pieces.append(headers[name])
        pieces.extend(tables.compressed(name))
        if name in process:
            pieces.append(compress(process[name]))
    if openmetrics:
        pieces.append(_COMPRESSED_EOF)
    return gzip_stream(pieces)


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header asks for OpenMetrics (Prometheus sends it first, with
    the text format as a fallback)."""
    return "application/openmetrics-text" in accept
