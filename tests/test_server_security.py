"""Issue 9, the server's TLS and tokens: TLS and mTLS with a CA made at test time, bearer tokens
(none, wrong, revoked after the file changes), health open without one, reflection by flag, and
certificates rotated while the server runs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clip_grpc.auth import NO_TOKEN, NOT_BEARER, WRONG_TOKEN
from clip_grpc.client import Client
from clip_grpc.embed_cli import main as embed_main
from clip_grpc.embed_cli import parse_args as embed_parse_args
from clip_grpc.embed_cli.outputs import load_embeddings
from clip_grpc.errors import StartupError
from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2, clip_pb2_grpc
from tests.bridge_process import free_port
from tests.certificates import Authority
from tests.conftest import server_config
from tests.rest_helpers import error_of, running_bridge
from tests.server_process import REPO, ServerProcess
from tests.test_server import GRPCURL
from tests.waiting import until

TOKENS = "# callers\nalpha-token\n\n  beta-token  \n"
# A channel of its own for each client: grpc otherwise shares connections between channels
# with the same settings, and a test of a handshake would see an older connection.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca, other = Authority(folder / "ca", "test-ca"), Authority(folder / "other", "other-ca")
    return {"ca": ca, "server": ca.issue("server"), "client": ca.issue("client"),
            "other_ca": other, "other_server": other.issue("server"),
            "other_client": other.issue("client")}


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    return path


def secured(tiny_clip_dir, tiny_clip, **settings):
    return running_server(server_config(tiny_clip_dir, **settings), loaded=tiny_clip)


def client(target, **options) -> Client:
    options.setdefault("retries", 0)
    options.setdefault("retry_budget", 5.0)
    options.setdefault("timeout", 20.0)
    return Client(target, channel_options=OWN_CONNECTION, **options)


async def failure(call) -> grpc.aio.AioRpcError | None:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def health_status(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=20)
    return response.status


# ---- TLS and tokens together ---------------------------------------------------------------
async def test_tls_and_tokens(tiny_clip_dir, tiny_clip, pki, token_file, caplog):
    caplog.set_level("INFO", logger="clip_grpc.access")
    server, roots = pki["server"], pki["ca"].cert
    async with secured(tiny_clip_dir, tiny_clip, tls_cert=str(server.cert),
                       tls_key=str(server.key), auth_token_file=str(token_file)) as running:
        target = running.target
        async with client(target, root_certificates=roots, token="beta-token") as good:
            assert (await good.ainfo()).embedding_dim == 16
            assert (await good.aencode(["a red square"])).shape == (1, 16)

        async with client(target, root_certificates=roots) as anonymous:
            error = await failure(anonymous.ainfo())
            assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, NO_TOKEN)
            error = await failure(anonymous.aencode(["a"]))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        async with client(target, root_certificates=roots, token="gamma-token") as wrong:
            error = await failure(wrong.ainfo())
            assert (error.code(), error.details()) == (
                grpc.StatusCode.UNAUTHENTICATED, WRONG_TOKEN)
        basic = {"authorization": "Basic YWxwaGEtdG9rZW4="}
        async with client(target, root_certificates=roots, metadata=basic) as not_bearer:
            error = await failure(not_bearer.ainfo())
            assert (error.code(), error.details()) == (
                grpc.StatusCode.UNAUTHENTICATED, NOT_BEARER)

        async with client(target, token="alpha-token") as plaintext:
            error = await failure(plaintext.ainfo())
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        async with client(target, root_certificates=pki["other_ca"].cert,
                          token="alpha-token") as distrustful:
            error = await failure(distrustful.ainfo())
            assert error.code() == grpc.StatusCode.UNAVAILABLE

        # Probes need neither token nor client certificate.
        credentials = grpc.ssl_channel_credentials(roots.read_bytes())
        async with grpc.aio.secure_channel(target, credentials, OWN_CONNECTION) as channel:
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
            jina = channel.stream_stream("/jina.JinaRPC/Call")
            error = await failure(jina(iter([b""]), timeout=20).read())
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            # clip_client sends its credential as it is: {"Authorization": "Bearer <token>"}.
            bearer = (("authorization", "Bearer alpha-token"),)
            answered = await jina(iter([b""]), metadata=bearer, timeout=20).read()
            assert isinstance(answered, bytes)

        refused = running.metrics.registry.get_sample_value(
            "clip_grpc_rpcs_total", {"method": "Info", "code": "UNAUTHENTICATED"})
        assert refused == 3
    logged = [r.status for r in caplog.records if r.name == "clip_grpc.access"]
    assert logged.count("UNAUTHENTICATED") == 4 and "OK" in logged


async def test_client_certificates_are_required_with_a_client_ca(tiny_clip_dir, tiny_clip, pki):
    server, ca = pki["server"], pki["ca"]
    async with secured(tiny_clip_dir, tiny_clip, tls_cert=str(server.cert),
                       tls_key=str(server.key), tls_client_ca=str(ca.cert)) as running:
        async with client(running.target, root_certificates=ca.cert) as without:
            assert (await failure(without.ainfo())).code() == grpc.StatusCode.UNAVAILABLE
        stranger = pki["other_client"]
        async with client(running.target, root_certificates=ca.cert,
                          certificate_chain=stranger.cert, private_key=stranger.key) as other:
            assert (await failure(other.ainfo())).code() == grpc.StatusCode.UNAVAILABLE
        known = pki["client"]
        async with client(running.target, root_certificates=ca.cert,
                          certificate_chain=known.cert, private_key=known.key) as member:
            assert (await member.aencode(["a"])).shape == (1, 16)


async def test_clip_embed_against_tls_client_certificates_and_a_token(
        tiny_clip_dir, tiny_clip, pki, token_file, tmp_path):
    server, ca, member = pki["server"], pki["ca"], pki["client"]
    texts = tmp_path / "captions.txt"
    texts.write_text("a red square\na blue circle\n")
    holder = tmp_path / "my-token"
    holder.write_text("# issued today\nalpha-token\n")
    async with secured(tiny_clip_dir, tiny_clip, tls_cert=str(server.cert),
                       tls_key=str(server.key), tls_client_ca=str(ca.cert),
                       auth_token_file=str(token_file)) as running:
        def embed(output, *security):
            return embed_main([str(texts), "-o", str(output), "--server", running.target,
                               "--no-progress", "--retries", "0", "--retry-budget", "5",
                               "--root-certs", str(ca.cert), *security])

        mtls = ("--client-cert", str(member.cert), "--client-key", str(member.key))
        assert await asyncio.to_thread(embed, tmp_path / "out", "--token-file", str(holder),
                                       *mtls) == 0
        ids, vectors = load_embeddings(tmp_path / "out")
        assert list(ids) == ["1", "2"] and vectors.shape == (2, 16)
        assert await asyncio.to_thread(embed, tmp_path / "anonymous", *mtls) != 0
        assert await asyncio.to_thread(embed, tmp_path / "no-cert", "--token-file",
                                       str(holder)) != 0
    holder.write_text("# revoked\n")
    with pytest.raises(SystemExit) as usage:
        embed_parse_args([str(texts), "-o", str(tmp_path / "x"), "--token-file", str(holder)])
    assert usage.value.code == 2


async def test_the_bridge_reaches_an_mtls_and_token_server(
        tiny_clip_dir, tiny_clip, pki, token_file, tmp_path):
    server, ca, member = pki["server"], pki["ca"], pki["client"]
    bridge_token = tmp_path / "bridge-token"
    bridge_token.write_text("beta-token\n")
    async with secured(tiny_clip_dir, tiny_clip, tls_cert=str(server.cert),
                       tls_key=str(server.key), tls_client_ca=str(ca.cert),
                       auth_token_file=str(token_file)) as running:
        tls = {"grpc_root_cert": str(ca.cert)}
        certificate = {"grpc_client_cert": str(member.cert), "grpc_client_key": str(member.key)}
        async with running_bridge(running.target, grpc_auth_token_file=str(bridge_token),
                                  **tls, **certificate) as bridge:
            answer = await bridge.post_json("/v1/embed", {"items": [{"text": "a red square"}]})
            assert answer.code == 200, answer.body
        async with running_bridge(running.target, **tls, **certificate) as tokenless:
            answer = await tokenless.post_json("/v1/embed", {"items": [{"text": "a"}]})
            assert (answer.code, error_of(answer)["code"]) == (503, "UNAVAILABLE")
            assert "token was refused" in error_of(answer)["message"]
        async with running_bridge(running.target, grpc_auth_token_file=str(bridge_token),
                                  grpc_timeout_s=5, **tls) as no_certificate:
            answer = await no_certificate.post_json("/v1/embed", {"items": [{"text": "a"}]})
            assert answer.code == 503


# ---- tokens ---------------------------------------------------------------------------------
async def test_a_token_removed_from_the_file_stops_working(tiny_clip_dir, tiny_clip, token_file):
    async with secured(tiny_clip_dir, tiny_clip, auth_token_file=str(token_file)) as running:
        async with client(running.target, token="alpha-token") as alpha, \
                client(running.target, token="beta-token") as beta:
            assert (await alpha.ainfo()).embedding_dim == 16
            token_file.write_text("beta-token\ndelta-token\n")

            async def alpha_refused():
                error = await failure(alpha.ainfo())
                return error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED

            assert await until(alpha_refused, every=0.1)
            assert (await beta.ainfo()).embedding_dim == 16
        async with client(running.target, token="delta-token") as delta:
            assert (await delta.ainfo()).embedding_dim == 16


async def test_health_stays_open_and_reflection_follows_its_flag(
        tiny_clip_dir, tiny_clip, token_file):
    async def services(channel, token=None):
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        call = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=20)
        try:
            response = await call.read()
        except grpc.aio.AioRpcError as error:
            return error.code()
        return {service.name for service in response.list_services_response.service}

    for mode in ("on", "off", "auth"):
        async with secured(tiny_clip_dir, tiny_clip, auth_token_file=str(token_file),
                           reflection=mode) as running:
            async with grpc.aio.insecure_channel(running.target) as channel:
                assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
                anonymous = await services(channel)
                with_token = await services(channel, "alpha-token")
                stub = clip_pb2_grpc.ClipServiceStub(channel)
                error = await failure(stub.Info(clip_pb2.InfoRequest(), timeout=20))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        if mode == "off":
            assert anonymous == with_token == grpc.StatusCode.UNIMPLEMENTED
            continue
        assert "clip_grpc.v1.ClipService" in with_token
        if mode == "on":
            assert anonymous == with_token
        else:
            assert anonymous == grpc.StatusCode.UNAUTHENTICATED


async def test_grpcurl_with_a_ca_and_a_token(tiny_clip_dir, tiny_clip, pki, token_file):
    server = pki["server"]
    async with secured(tiny_clip_dir, tiny_clip, tls_cert=str(server.cert),
                       tls_key=str(server.key), auth_token_file=str(token_file),
                       reflection="auth") as running:
        def grpcurl(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([GRPCURL, "-cacert", str(pki["ca"].cert), *args],
                                  capture_output=True, text=True, timeout=60)

        token = ("-H", "authorization: Bearer alpha-token")
        listed = await asyncio.to_thread(grpcurl, *token, running.target, "list")
        assert "clip_grpc.v1.ClipService" in listed.stdout.split(), listed.stderr
        info = await asyncio.to_thread(
            grpcurl, *token, running.target, "clip_grpc.v1.ClipService/Info")
        assert json.loads(info.stdout)["embedding_dim"] == 16, info.stderr
        refused = await asyncio.to_thread(grpcurl, running.target, "list")
        assert refused.returncode != 0 and "Unauthenticated" in refused.stderr


async def test_a_health_port_answers_plaintext_probes_of_a_mtls_server(
        tiny_clip_dir, tiny_clip, pki, token_file):
    server, ca, port = pki["server"], pki["ca"], free_port()
    async with secured(tiny_clip_dir, tiny_clip, tls_cert=str(server.cert),
                       tls_key=str(server.key), tls_client_ca=str(ca.cert),
                       auth_token_file=str(token_file), health_port=port) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as probe:
            assert await health_status(probe) == health_pb2.HealthCheckResponse.SERVING
            stub = clip_pb2_grpc.ClipServiceStub(probe)
            metadata = (("authorization", "Bearer alpha-token"),)
            error = await failure(stub.Info(clip_pb2.InfoRequest(), metadata=metadata, timeout=20))
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # health alone, nothing else
        async with grpc.aio.insecure_channel(running.target, OWN_CONNECTION) as plaintext:
            error = await failure(health_status(plaintext))
            assert error.code() == grpc.StatusCode.UNAVAILABLE

        def image_healthcheck(**env: str) -> int:  # the Dockerfile's HEALTHCHECK
            ports = {"CLIP_GRPC_PORT": str(running.port), "REST_BRIDGE_PORT": str(free_port())}
            return subprocess.run([sys.executable, str(REPO / "docker" / "healthcheck.py")],
                                  env={**os.environ, **ports, **env}, capture_output=True,
                                  timeout=60).returncode

        assert await asyncio.to_thread(image_healthcheck, CLIP_GRPC_HEALTH_PORT=str(port)) == 0
        assert await asyncio.to_thread(image_healthcheck) == 1  # TLS: no plaintext answer
        with pytest.raises(StartupError, match="--health-port"):
            async with secured(tiny_clip_dir, tiny_clip, health_port=port):
                pass


# ---- rotation -------------------------------------------------------------------------------
def _install(issued, folder):
    """Replace the server's files the way a rotation does: each written aside, then renamed."""
    for source, name in ((issued.key, "server.key"), (issued.cert, "server.pem")):
        shutil.copyfile(source, folder / f"{name}.new")
        os.replace(folder / f"{name}.new", folder / name)


async def test_rotated_certificates_reach_new_connections(tiny_clip_dir, tiny_clip, pki, tmp_path):
    _install(pki["server"], tmp_path)
    async with secured(tiny_clip_dir, tiny_clip, tls_cert=str(tmp_path / "server.pem"),
                       tls_key=str(tmp_path / "server.key")) as running:
        async def answers(roots) -> bool:
            async with client(running.target, root_certificates=roots) as fresh:
                return await failure(fresh.ainfo()) is None

        assert await answers(pki["ca"].cert)
        assert not await answers(pki["other_ca"].cert)
        _install(pki["other_server"], tmp_path)
        assert await until(lambda: answers(pki["other_ca"].cert), every=0.1)
        assert not await answers(pki["ca"].cert)
        # Half-written files are refused and the current certificate kept.
        (tmp_path / "server.key").write_text("-----BEGIN PRIVATE KEY-----\ntruncated")
        assert running.tls.reload() is False
        assert await answers(pki["other_ca"].cert)


# ---- the real process: SIGHUP and startup errors ---------------------------------------------
def test_sighup_rereads_the_token_and_certificate_files(tiny_clip_dir, token_file, pki, tmp_path):
    _install(pki["server"], tmp_path)
    server = ServerProcess(tiny_clip_dir, "--auth-token-file", str(token_file), "--tls-cert",
                           str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"))
    alpha = (("authorization", "Bearer alpha-token"),)

    def info(roots):
        credentials = grpc.ssl_channel_credentials(roots.read_bytes())
        with grpc.secure_channel(server.target, credentials, OWN_CONNECTION) as channel:
            call = channel.unary_unary("/clip_grpc.v1.ClipService/Info")
            call(clip_pb2.InfoRequest().SerializeToString(), metadata=alpha, timeout=20)

    try:
        server.wait_serving(grpc.ssl_channel_credentials(pki["ca"].cert.read_bytes()))
        info(pki["ca"].cert)
        token_file.write_text("beta-token\n")
        _install(pki["other_server"], tmp_path)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("re-read the auth token file", timeout=30)
        server.wait_for_log("re-read the TLS certificate files", timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            info(pki["other_ca"].cert)  # the new certificate, and the token no longer accepted
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.kill()


def _start(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clip_grpc", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


@pytest.mark.parametrize("case", ["missing cert", "key of another", "empty tokens", "no key"])
def test_bad_security_files_stop_startup_naming_the_flag(case, pki, tmp_path):
    server, other = pki["server"], pki["other_server"]
    empty = tmp_path / "empty-tokens"
    empty.write_text("# nobody yet\n")
    args, expected = {
        "missing cert": (["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key",
                          str(server.key)], "--tls-cert"),
        "key of another": (["--tls-cert", str(server.cert), "--tls-key", str(other.key)],
                           "--tls-key"),
        "empty tokens": (["--auth-token-file", str(empty)], "--auth-token-file"),
        "no key": (["--tls-cert", str(server.cert)], "--tls-key"),
    }[case]
    done = _start(*args)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
