"""Issue 9, the bridge's TLS and authentication: HTTPS and mTLS with certificates made at test
time, API keys (none, wrong, revoked after reload), probes open without one, /metrics by flag,
and the bridge's own token towards the server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.bridge_process import bridge_process, stand_in_server
from tests.certificates import self_signed_certificate
from tests.rest_helpers import error_of, running_bridge
from tests.waiting import until


@pytest.fixture
async def stand_in():
    async with stand_in_server() as (target, servicer):
        yield target, servicer


def write(path, text: str):
    path.write_text(text)
    return path


# ---- API keys -------------------------------------------------------------------------------
async def test_api_keys_are_needed_everywhere_but_the_probes(tmp_path, stand_in):
    target, _ = stand_in
    keys = write(tmp_path / "keys", "# clients\nkey-one\n\n  key-two  \n")
    async with running_bridge(target, api_key_file=str(keys)) as bridge:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "key-on"},
                        {"Authorization": "Basic a2V5LW9uZQ=="}, {"Authorization": "Bearer "}):
            response = await bridge.get("/v1/info", headers=headers)
            error = error_of(response)
            assert (response.code, error["code"]) == (401, "UNAUTHENTICATED"), headers
            assert response.headers["WWW-Authenticate"] == "Bearer"
        for headers in ({"Authorization": "Bearer key-one"}, {"authorization": "bearer key-two"},
                        {"X-API-Key": "key-two"}):
            assert (await bridge.get("/v1/info", headers=headers)).code == 200, headers
        response = await bridge.post_form({"text-1": "a"})
        assert response.code == 401
        # Unknown routes too: no key, no map of the API.
        assert (await bridge.get("/nowhere")).code == 401
        assert (await bridge.get("/healthz")).code == 200
        assert (await bridge.get("/readyz")).code == 200
        assert (await bridge.get("/metrics")).code == 401
        assert (await bridge.get("/metrics", headers={"X-API-Key": "key-one"})).code == 200
    async with running_bridge(target, api_key_file=str(keys), metrics_auth=False) as bridge:
        assert (await bridge.get("/metrics")).code == 200
        assert (await bridge.get("/v1/info")).code == 401


async def test_a_key_removed_from_the_file_stops_working(tmp_path, stand_in, caplog):
    target, _ = stand_in
    keys = write(tmp_path / "keys", "old-key\nkept-key\n")
    async with running_bridge(target, api_key_file=str(keys)) as bridge:
        old, kept = {"X-API-Key": "old-key"}, {"X-API-Key": "kept-key"}
        assert (await bridge.get("/v1/info", headers=old)).code == 200
        write(keys, "kept-key\nnew-key\n")

        async def old_refused():
            return (await bridge.get("/v1/info", headers=old)).code == 401

        assert await until(old_refused)
        assert (await bridge.get("/v1/info", headers=kept)).code == 200
        assert (await bridge.get("/v1/info", headers={"X-API-Key": "new-key"})).code == 200
        # A file that cannot be read keeps the keys it had: asked until the bridge has tried
        # (and failed) to re-read it, the kept key works every time.
        keys.unlink()

        async def kept_works_after_a_failed_reread() -> bool:
            assert (await bridge.get("/v1/info", headers=kept)).code == 200
            return "could not re-read the API key file" in caplog.text

        with caplog.at_level(logging.ERROR, logger="clip_grpc.watched_file"):
            assert await until(kept_works_after_a_failed_reread, every=0.2)
        assert (await bridge.get("/v1/info", headers=kept)).code == 200


async def test_sighup_rereads_the_keys(tmp_path, stand_in):
    target, _ = stand_in
    keys = write(tmp_path / "keys", "key-aaaa\n")
    async with bridge_process(target, "--api-key-file", str(keys)) as bridge:
        client = AsyncHTTPClient(force_instance=True)

        async def code(key: str) -> int:
            response = await client.fetch(bridge.base_url + "/v1/info", raise_error=False,
                                          headers={"X-API-Key": key})
            return response.code

        try:
            assert await code("key-aaaa") == 200
            # Same size, inode and mtime: only the signal can tell the bridge.
            stat = os.stat(keys)
            with open(keys, "r+") as file:
                file.write("key-bbbb\n")
            os.utime(keys, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            await asyncio.sleep(1.5)
            assert await code("key-aaaa") == 200
            bridge.process.send_signal(signal.SIGHUP)

            async def swapped():
                return await code("key-aaaa") == 401 and await code("key-bbbb") == 200

            assert await until(swapped)
        finally:
            client.close()


async def test_an_unreadable_key_file_stops_the_bridge_at_start(tmp_path, stand_in):
    target, _ = stand_in
    with pytest.raises(RuntimeError, match="exited"):
        async with bridge_process(target, "--api-key-file", str(tmp_path / "missing")):
            pass


# ---- the bridge's token towards the server ------------------------------------------------
async def test_the_bridge_sends_its_token_to_the_server(tmp_path, stand_in):
    target, servicer = stand_in
    token = write(tmp_path / "token", "first-token\n")
    async with running_bridge(target, grpc_auth_token_file=str(token)) as bridge:
        assert (await bridge.get("/v1/info")).code == 200
        assert servicer.metadata[-1]["authorization"] == "Bearer first-token"
        write(token, "second-token\n")

        async def new_token_sent():
            await bridge.get("/v1/info")
            return servicer.metadata[-1]["authorization"] == "Bearer second-token"

        assert await until(new_token_sent)
    async with running_bridge(target) as bridge:
        assert (await bridge.get("/v1/info")).code == 200
        assert "authorization" not in servicer.metadata[-1]


# ---- HTTPS and mTLS ---------------------------------------------------------------------------
def client_context(trusted_cert, client_pair=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trusted_cert))
    if client_pair is not None:
        key, cert = client_pair
        context.load_cert_chain(str(cert), str(key))
    return context


def make_pair(folder, san: str):
    folder.mkdir()
    return self_signed_certificate(folder, san)


async def test_https_and_certificates_reread_when_they_change(tmp_path, stand_in):
    target, _ = stand_in
    key, cert = make_pair(tmp_path / "first", "IP:127.0.0.1")
    next_key, next_cert = make_pair(tmp_path / "second", "IP:127.0.0.1")
    served_key, served_cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    served_key.write_bytes(key.read_bytes())
    served_cert.write_bytes(cert.read_bytes())
    async with running_bridge(target, tls_cert=str(served_cert), tls_key=str(served_key)) as b:
        assert b.base_url.startswith("https://")
        response = await b.fetch("/v1/info", ssl_options=client_context(cert))
        assert response.code == 200
        # Plain HTTP on the HTTPS port gets nowhere.
        with pytest.raises(OSError):
            await b.client.fetch(b.base_url.replace("https", "http") + "/healthz")
        # A certificate nobody vouches for is refused by the client.
        with pytest.raises(ssl.SSLError):
            await b.fetch("/healthz", ssl_options=client_context(next_cert))

        # Rotation: the files change; new connections get the new certificate.
        served_key.write_bytes(next_key.read_bytes())
        served_cert.write_bytes(next_cert.read_bytes())

        async def new_certificate_served():
            client = AsyncHTTPClient(force_instance=True)  # new connections
            try:
                response = await client.fetch(b.url("/healthz"), raise_error=False,
                                              ssl_options=client_context(next_cert))
                return response.code == 200
            except ssl.SSLError:
                return False
            finally:
                client.close()

        assert await until(new_certificate_served)


async def test_mtls_requires_a_client_certificate_signed_by_the_ca(tmp_path, stand_in):
    target, _ = stand_in
    key, cert = make_pair(tmp_path / "server", "IP:127.0.0.1")
    client_pair = make_pair(tmp_path / "client", "DNS:client.test")
    stranger_pair = make_pair(tmp_path / "stranger", "DNS:stranger.test")
    async with running_bridge(target, tls_cert=str(cert), tls_key=str(key),
                              tls_client_ca=str(client_pair[1])) as bridge:
        response = await bridge.fetch("/v1/info", ssl_options=client_context(cert, client_pair))
        assert response.code == 200
        for pair in (None, stranger_pair):
            client = AsyncHTTPClient(force_instance=True)
            try:
                with pytest.raises((ssl.SSLError, OSError)):
                    response = await client.fetch(
                        bridge.url("/healthz"), ssl_options=client_context(cert, pair),
                        request_timeout=10)
                    # TLS 1.3 may finish the handshake before the server's verdict arrives.
                    raise AssertionError(f"answered {response.code} without a client certificate")
            finally:
                client.close()


def test_tls_settings_go_together(tmp_path):
    from rest_bridge.config import BridgeConfig

    with pytest.raises(ValueError, match="go together"):
        BridgeConfig(tls_cert="cert.pem")
    with pytest.raises(ValueError, match="needs tls_cert"):
        BridgeConfig(tls_client_ca="ca.pem")
