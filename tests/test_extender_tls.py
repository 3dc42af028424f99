"""HTTPS with mutual TLS, as a Service-backed extender of a self-managed scheduler runs."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from extender_builders import node, service

from extender import create_app
from extender.server import ServeOptions, ssl_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    root = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=fairpack-test-ca", cwd=root)  # fmt: skip
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=root)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=root)  # fmt: skip
    return root


async def test_mutual_tls_admits_only_clients_with_a_certificate(pki: Path) -> None:
    options = ServeOptions("127.0.0.1", 0, pki / "server.pem", pki / "server.key", pki / "ca.pem")
    runner = web.AppRunner(create_app(service([node("gpu-0")])))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context(options))
    await site.start()
    port = runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}/healthz"
    trusting = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with_certificate = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with_certificate.load_cert_chain(pki / "client.pem", pki / "client.key")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=with_certificate) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url, ssl=trusting) as response:
                    await response.read()
    finally:
        await runner.cleanup()
