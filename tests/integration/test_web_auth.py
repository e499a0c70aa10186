"""The daemon's listener over TLS and behind basic auth (``web:``), with a real TLS client
trusting a CA made for the test, and wrong or missing credentials."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import ssl
import threading
from pathlib import Path

import bcrypt
import httpx
import pytest

from monitor.config import parse_config
from monitor.httpclient import tls_context
from monitor.simulator import SimulatorServer
from monitor.web import BasicAuth, CertificateReloader, build_app
from tests.support.daemon import daemon_config, running
from tests.support.delivery import eventually
from tests.support.tls import Pki, make_pki

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def web_config(server: SimulatorServer, tmp_path: Path, web: str) -> str:
    return daemon_config(server, tmp_path) + f"web: {web}\n"


async def test_tls_and_basic_auth_protect_every_page_but_the_exempt_probe(
    server: SimulatorServer, tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    web = (
        f"{{tls_cert_file: '{pki.cert_file}', tls_key_file: '{pki.key_file}', "
        f"basic_auth_users: {{prometheus: '{HASH}'}}, auth_exempt: [/healthz]}}"
    )
    async with running(parse_config(web_config(server, tmp_path, web))) as daemon:
        base = f"https://127.0.0.1:{daemon.port}"
        async with httpx.AsyncClient(verify=tls_context(str(pki.ca_file))) as client:
            good = await client.get(f"{base}/metrics", auth=("prometheus", PASSWORD))
            wrong = await client.get(f"{base}/metrics", auth=("prometheus", "nope"))
            unknown = await client.get(f"{base}/metrics", auth=("admin", PASSWORD))
            missing = await client.get(f"{base}/metrics")
            garbled = await client.get(f"{base}/metrics", headers={"Authorization": "Basic %%"})
            ready = await client.get(f"{base}/readyz")
            probe = await client.get(f"{base}/healthz")
            again = await client.get(f"{base}/readyz", auth=("prometheus", PASSWORD))
        async with httpx.AsyncClient() as public_cas_only:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await public_cas_only.get(f"{base}/healthz")
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{daemon.port}/healthz")
    assert good.status_code == 200 and "keywatch_leader" in good.text
    for refused in (wrong, unknown, missing, garbled, ready):
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="keywatch", charset="UTF-8"'
        assert refused.text == "unauthorized\n"
    assert (probe.status_code, probe.text) == (200, "ok\n")
    assert again.status_code == 200
    assert f"serving https://127.0.0.1:{daemon.port}/metrics (basic auth)" in caplog.text
    for secret in (PASSWORD, HASH, HASH[7:]):
        assert secret not in caplog.text
        assert all(secret not in r.text for r in (good, wrong, unknown, missing))


async def test_basic_auth_without_tls_and_without_exemptions(
    server: SimulatorServer, tmp_path: Path
) -> None:
    web = f"{{basic_auth_users: {{prometheus: '{HASH}'}}}}"
    async with running(parse_config(web_config(server, tmp_path, web))) as daemon:
        base = f"http://127.0.0.1:{daemon.port}"
        async with httpx.AsyncClient() as client:
            probe = await client.get(f"{base}/healthz")
            authorized = await client.get(f"{base}/healthz", auth=("prometheus", PASSWORD))
    assert probe.status_code == 401
    assert authorized.status_code == 200


async def test_an_unknown_user_costs_one_bcrypt_check_like_a_wrong_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        checks.append(hashed)
        return real_checkpw(password, hashed)

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not reached")

    auth = BasicAuth(app, users={"prometheus": HASH}, exempt=())
    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    header = b"Basic " + base64.b64encode(b"admin:" + PASSWORD.encode())
    assert not await auth._allowed(header)
    header = b"Basic " + base64.b64encode(b"prometheus:wrong")
    assert not await auth._allowed(header)
    long_password = b"prometheus:" + PASSWORD.encode() + b"x" * 100
    assert not await auth._allowed(b"Basic " + base64.b64encode(long_password))
    assert len(checks) == 3
    assert checks[0] != HASH.encode() and checks[0].startswith(b"$2b$04$")  # the dummy


async def test_the_probes_answer_503_when_the_store_does_not_answer_in_time() -> None:
    release = threading.Event()
    app = build_app(
        exposition=lambda openmetrics, gzip: iter(()),
        ping_store=lambda: release.wait(10),
        polled_all=lambda: True,
        store_timeout=0.2,
    )
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kw") as client:
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
    finally:
        release.set()
    for answer in (health, ready):
        assert (answer.status_code, answer.text) == (
            503,
            "store unavailable: no answer within 0.2s",
        )


async def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate a new TLS connection to the daemon is shown."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    assert isinstance(der, bytes)
    return der


def renewal(directory: Path) -> tuple[Pki, Pki, Pki]:
    """Two certificates, and the files served (``live``), holding the first for now."""
    first, renewed = make_pki(directory / "first"), make_pki(directory / "renewed")
    live = Pki(first.ca_file, directory / "live.pem", directory / "live.key")
    shutil.copy(first.cert_file, live.cert_file)
    shutil.copy(first.key_file, live.key_file)
    return first, renewed, live


def der_of(pki: Pki) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pki.cert_file.read_text())


async def test_renewed_tls_files_are_served_to_new_connections_after_sighup(
    server: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first, renewed, live = renewal(tmp_path)
    config = tmp_path / "keywatch.yaml"
    web = f"{{tls_cert_file: '{live.cert_file}', tls_key_file: '{live.key_file}'}}"
    config.write_text(web_config(server, tmp_path, web))
    trust_both = ssl.create_default_context(cafile=str(first.ca_file))
    trust_both.load_verify_locations(cafile=str(renewed.ca_file))
    async with running(parse_config(config.read_text()), config_path=config) as daemon:
        assert await served_certificate(daemon.port, trust_both) == der_of(first)
        # half renewed: the new certificate with the old key does not load; the old pair stays
        shutil.copy(renewed.cert_file, live.cert_file)
        await daemon.reload()
        await daemon.reload()
        assert await served_certificate(daemon.port, trust_both) == der_of(first)
        shutil.copy(renewed.key_file, live.key_file)
        await daemon.reload()
        assert await served_certificate(daemon.port, trust_both) == der_of(renewed)
    refusals = [r for r in caplog.records if "renewed TLS files not loaded" in r.getMessage()]
    assert len(refusals) == 1  # once per pair of files, not once per look
    assert "TLS certificate reloaded" in caplog.text
    assert renewed.key_file.read_text() not in caplog.text


async def test_the_reloader_also_looks_on_its_own_timer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, renewed, live = renewal(tmp_path)
    context = live.server_context()
    reloader = CertificateReloader(context, str(live.cert_file), str(live.key_file))
    looking = asyncio.create_task(reloader.run(every=0.01))
    try:
        shutil.copy(renewed.cert_file, live.cert_file)
        shutil.copy(renewed.key_file, live.key_file)
        await eventually(lambda: "TLS certificate reloaded" in caplog.text, what="a reload")
    finally:
        looking.cancel()
