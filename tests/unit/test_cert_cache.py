"""Each certificate is parsed once (``cert_facts`` keeps its facts), in a bounded cache."""

from __future__ import annotations

import pytest

from monitor import certificates as model
from tests.support.certs import cert_pem, certificate_for_kid, thumbprint


def test_a_certificate_is_parsed_once_and_its_facts_are_shared() -> None:
    certificate = certificate_for_kid("cache-1")
    first = model.cert_facts(cert_pem(certificate))
    again = model.cert_facts("".join(cert_pem(certificate)))  # an equal, distinct string
    assert first.sha1 == thumbprint(certificate)
    assert again is first


def test_crlf_and_lf_spellings_give_the_same_facts() -> None:
    pem = cert_pem(certificate_for_kid("cache-2"))
    assert model.cert_facts(pem.replace("\n", "\r\n")) == model.cert_facts(pem)


def test_the_cache_is_bounded_and_forgets_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "_cert_cache", {})
    monkeypatch.setattr(model, "CERT_CACHE_SIZE", 2)
    pems = [cert_pem(certificate_for_kid(f"bound-{n}")) for n in range(3)]
    first = model.cert_facts(pems[0])
    for pem in pems[1:]:
        model.cert_facts(pem)
    assert len(model._cert_cache) == 2
    assert model.cert_facts(pems[0]) is not first  # parsed again
    assert model.cert_facts(pems[0]) == first


def test_not_a_certificate_is_refused_and_not_cached() -> None:
    with pytest.raises(ValueError):
        model.cert_facts("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError):
        model.cert_facts("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
