"""deploy/: every rendering (the base and each overlay) validates against the Kubernetes schemas,
offline, and keeps the promises the server and the bridge rely on.

Schemas: kubernetes-validate's strict ones (unknown fields fail) for the oldest Kubernetes the
manifests support (1.30: the preStop `sleep` action) and the newest the pinned package ships.
Rendering: tests/deploy_render.py, the small kustomize subset deploy/README.md describes. The
flags and environment the containers get are parsed by the services' own parsers.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from clip_grpc.config import ENV_PREFIX as SERVER_PREFIX
from clip_grpc.config import ServerConfig, batch_limits, parse_args
from clip_grpc.metrics import ServerMetrics
from clip_grpc.settings import env_name
from rest_bridge.config import ENV_PREFIX as BRIDGE_PREFIX
from rest_bridge.config import BridgeConfig, parse_config
from tests.deploy_render import RenderError, render

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSIONS = ("1.30", "1.37")
RENDERINGS = ["base"] + [f"overlays/{p.name}" for p in sorted((DEPLOY / "overlays").iterdir())]
ADAPTER_CONFIG = DEPLOY / "prometheus-adapter" / "adapter-config.yaml"
SERVER, HEADLESS, BRIDGE = "clip-grpc-server", "clip-grpc-headless", "clip-grpc-bridge"
# Environment the containers may get besides the services' own settings.
OTHER_ENV = {"OMP_NUM_THREADS", "HOME", "XDG_CACHE_HOME", "HF_HOME", "MODEL_DIR"}
STARTUP_BUDGET_S = 600  # ViT-L/14 from a network volume, warmed up on CPU
CLIENT_PING_INTERVAL_S = 10  # what the issue promises clients may ping at


@cache
def rendered(name: str) -> tuple[dict, ...]:
    return tuple(render(DEPLOY / name))


def objects(name: str) -> list[dict]:
    return copy.deepcopy(list(rendered(name)))


def find(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def only_container(deployment: dict) -> dict:
    (container,) = pod_spec(deployment)["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def port_named(container: dict, name: str) -> int:
    ports = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    assert len(ports) == 1, f"the container declares {len(ports)} ports named {name}"
    return ports[0]


def parsed(parser, container: dict, mode: str):
    """The service's config from the container's args (after the entrypoint's mode) and env."""
    assert container["args"][0] == mode, f"docker/entrypoint.sh mode {container['args'][0]!r}"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser(container["args"][1:], env_of(container))
    except SystemExit:
        message = stderr.getvalue().strip().splitlines()[-1]
        raise AssertionError(f"{container['name']} refuses its settings: {message}") from None


def setting_env_names(config_class: type, prefix: str) -> set[str]:
    return {env_name(prefix, name) for name in config_class.__dataclass_fields__}


def check_env_names(container: dict, own: tuple[type, str], foreign: str) -> None:
    config_class, prefix = own
    known = setting_env_names(config_class, prefix)
    for name in env_of(container):
        assert not name.startswith(foreign), f"{name}: a setting of the other service"
        if name.startswith(prefix):
            assert name in known, f"{name}: no such setting"
        else:
            assert name in OTHER_ENV, f"{name}: unexpected environment variable"


def check_hardened(deployment: dict) -> None:
    uid = dockerfile_uid()
    pod = pod_spec(deployment)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    # Service links would put e.g. CLIP_GRPC_PORT=tcp://10.0.0.1:50051 into the environment of
    # every pod of a namespace holding a Service named clip-grpc: the server's own setting.
    assert pod_spec(deployment).get("enableServiceLinks") is False
    for container in pod_spec(deployment)["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def check_grace(deployment: dict, drain_s: float) -> None:
    """The kubelet waits preStop, then SIGTERM starts the drain: both must fit the grace."""
    pause = only_container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > pause + drain_s, f"grace {grace} s <= preStop {pause} s + drain {drain_s} s"


def check_mounted_file(deployment: dict, container: dict, path: str, sources: set[str]) -> None:
    """`path` is a file of a read-only mount of a volume of one of these kinds (secret, ...),
    one the volume projects (all its keys, or the `items` it lists)."""
    mounts = [m for m in container.get("volumeMounts", [])
              if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{path}: on no mounted volume of {container['name']}"
    (mount,) = mounts
    assert mount.get("readOnly") is True, f"{mount['mountPath']} is mounted writable"
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    kinds = set(volume) & sources
    assert kinds, f"{path}: volume {volume['name']} is not a {' or '.join(sorted(sources))}"
    (kind,) = kinds
    items = volume[kind].get("items")
    inside = path[len(mount["mountPath"].rstrip("/")) + 1:]
    assert items is None or inside in {i["path"] for i in items}, f"{path}: not projected"


def check_server(objs: list[dict]) -> ServerConfig:
    deployment = find(objs, "Deployment", SERVER)
    container = only_container(deployment)
    check_env_names(container, (ServerConfig, SERVER_PREFIX), BRIDGE_PREFIX)
    config = parsed(parse_args, container, "server")
    assert port_named(container, "grpc") == config.port
    assert config.metrics_port > 0 and port_named(container, "metrics") == config.metrics_port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.metrics_port)
    if config.tls_cert:  # the kubelet's gRPC probe speaks plaintext and presents no certificate
        assert config.health_port, "a TLS server needs CLIP_GRPC_HEALTH_PORT for its probes"
        for path in (config.tls_cert, config.tls_key, config.tls_client_ca):
            if path:
                check_mounted_file(deployment, container, path, {"secret"})
    if config.health_port:
        assert config.health_port not in (config.port, config.metrics_port), "ports collide"
        assert port_named(container, "health") == config.health_port, "undeclared health port"
    health_port = config.health_port or config.port
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, kind
        assert probe["grpc"] == {"port": health_port}, f"{kind} is not the server's health port"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= STARTUP_BUDGET_S
    check_grace(deployment, config.grace_seconds)
    assert config.max_connection_age_s > 0 and config.max_connection_age_grace_s > 0
    assert config.min_ping_interval_s <= CLIENT_PING_INTERVAL_S
    check_hardened(deployment)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/model"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    assert volume.get("persistentVolumeClaim", {}).get("readOnly") or "hostPath" in volume
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert requests["cpu"] and requests["memory"] and limits["memory"]
    cpus = int(limits["cpu"])
    assert int(env_of(container)["OMP_NUM_THREADS"]) == cpus == config.preprocess_workers, \
        "torch's and the preprocessing threads follow the pod's CPUs, not the node's"
    hostname = [c for c in pod_spec(deployment)["topologySpreadConstraints"]
                if c["topologyKey"] == "kubernetes.io/hostname"]
    assert hostname and selects(hostname[0]["labelSelector"]["matchLabels"], deployment)
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    return config


def check_bridge(objs: list[dict], server: ServerConfig) -> None:
    deployment = find(objs, "Deployment", BRIDGE)
    container = only_container(deployment)
    check_env_names(container, (BridgeConfig, BRIDGE_PREFIX), SERVER_PREFIX)
    config = parsed(parse_config, container, "bridge")
    headless = find(objs, "Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    (grpc_port,) = [p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_port == server.port
    assert config.grpc_target == f"dns:///{HEADLESS}:{grpc_port}"
    assert config.use_tls == bool(server.tls_cert), "the bridge and the server disagree on TLS"
    if server.tls_cert:  # a private CA: no public one signs an in-cluster name
        assert config.grpc_root_cert, "the bridge needs the CA of the server's certificate"
        check_mounted_file(deployment, container, config.grpc_root_cert, {"secret", "configMap"})
    if server.tls_client_ca:
        assert config.grpc_client_cert, "the server asks for a client certificate"
    assert port_named(container, "http") == config.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    check_grace(deployment, config.grace_seconds)
    check_hardened(deployment)


def selects(selector: dict, deployment: dict) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def selected(objs: list[dict], selector: dict) -> list[dict]:
    return [o for o in objs if o["kind"] == "Deployment" and selects(selector, o)]


def check_wiring(objs: list[dict]) -> None:
    """Services, budgets and the autoscaler reach exactly the pods they are meant for."""
    for deployment in (o for o in objs if o["kind"] == "Deployment"):
        assert selects(deployment["spec"]["selector"]["matchLabels"], deployment)
    for service in (o for o in objs if o["kind"] == "Service"):
        targets = selected(objs, service["spec"]["selector"])
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)}"
        (target,) = targets
        names = {p["name"] for c in pod_spec(target)["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: {port}"
    for budget in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        assert len(selected(objs, budget["spec"]["selector"]["matchLabels"])) == 1
    hpa = find(objs, "HorizontalPodAutoscaler", SERVER)
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert find(objs, target["kind"], target["name"]) is find(objs, "Deployment", SERVER)
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(kinds) == {"Pods", "Resource"}
    assert kinds["Pods"]["pods"]["metric"]["name"] in server_gauges()
    server = parsed(parse_args, only_container(find(objs, "Deployment", SERVER)), "server")
    queued = int(kinds["Pods"]["pods"]["target"]["averageValue"])
    images = batch_limits(server, server.device)["image"]
    assert queued == 2 * images, "scale out at two full image batches waiting per pod"
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert only_container(find(objs, "Deployment", SERVER))["resources"]["requests"]["cpu"]


@cache
def server_gauges() -> frozenset[str]:
    """The gauges the server exports (clip_grpc/metrics.py), read from its own registry."""
    families = ServerMetrics().registry.collect()
    return frozenset(f.name for f in families if f.type == "gauge")


@cache
def dockerfile_uid() -> int:
    (uid,) = re.findall(r"^USER (\d+):\d+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return int(uid)


# -- every rendering ---------------------------------------------------------------------------

def test_the_expected_renderings_exist():
    assert {"base", "overlays/gpu", "overlays/hostpath-model", "overlays/tls"} <= set(RENDERINGS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", RENDERINGS)
def test_every_object_validates_strictly(name, version):
    objs = objects(name)
    assert len({(o["kind"], o["metadata"]["name"]) for o in objs}) == len(objs)
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


def check_all(objs):
    server = check_server(objs)
    check_bridge(objs, server)
    check_wiring(objs)


@pytest.mark.parametrize("name", RENDERINGS)
def test_server_bridge_and_wiring_keep_their_promises(name):
    check_all(objects(name))


def test_base_serves_on_cpu_from_the_model_claim():
    objs = objects("base")
    server = check_server(objs)
    assert server.device == "cpu"
    claim = find(objs, "PersistentVolumeClaim", "clip-grpc-model")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    volumes = pod_spec(find(objs, "Deployment", SERVER))["volumes"]
    assert {"name": "model", "persistentVolumeClaim": {
        "claimName": "clip-grpc-model", "readOnly": True}} in volumes


def test_gpu_overlay_asks_for_one_gpu_and_gpu_nodes():
    objs = objects("overlays/gpu")
    deployment = find(objs, "Deployment", SERVER)
    container = only_container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert check_server(objs).device == "cuda"
    assert container["image"] == "clip-grpc-server:cuda"
    spec = pod_spec(deployment)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        spec["tolerations"]
    # The merge kept the base's settings beside the overlay's.
    assert env_of(container)["CLIP_GRPC_MAX_CONNECTION_AGE_S"] == "300"
    assert only_container(find(objs, "Deployment", BRIDGE))["image"] == "clip-grpc-bridge:latest"


def test_hostpath_overlay_swaps_the_claim_for_a_node_folder():
    objs = objects("overlays/hostpath-model")
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    volumes = pod_spec(find(objs, "Deployment", SERVER))["volumes"]
    (model,) = [v for v in volumes if v["name"] == "model"]
    assert set(model) == {"name", "hostPath"}


def test_tls_overlay_serves_tls_and_probes_the_plaintext_health_port():
    objs = objects("overlays/tls")
    server = check_server(objs)
    assert server.tls_cert and server.tls_key and server.health_port
    container = only_container(find(objs, "Deployment", SERVER))
    assert {container[kind]["grpc"]["port"] for kind in (
        "startupProbe", "readinessProbe", "livenessProbe")} == {server.health_port}
    # The base's settings are kept beside the overlay's, and the base itself stays plaintext.
    assert env_of(container)["CLIP_GRPC_MAX_CONNECTION_AGE_S"] == "300"
    assert check_server(objects("base")).tls_cert is None
    bridge = only_container(find(objs, "Deployment", BRIDGE))
    bridge_config = parsed(parse_config, bridge, "bridge")
    assert bridge_config.use_tls and bridge_config.grpc_root_cert
    # The bridge gets the CA alone, never the server's key.
    (volume,) = [v for v in pod_spec(find(objs, "Deployment", BRIDGE))["volumes"]
                 if "secret" in v]
    assert [i["key"] for i in volume["secret"]["items"]] == ["ca.crt"]


def test_prometheus_adapter_rule_serves_the_hpa_metric():
    (config_map,) = yaml.safe_load_all(ADAPTER_CONFIG.read_text())
    kubernetes_validate.validate(config_map, KUBERNETES_VERSIONS[0], strict=True)
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    hpa = find(objects("base"), "HorizontalPodAutoscaler", SERVER)
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    metric = pods["metric"]["name"]
    (rule,) = [r for r in rules if r["name"]["as"] == metric]
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
    assert series in server_gauges()
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


# -- broken manifests must fail ----------------------------------------------------------------

BROKEN_PATCHES = {
    "unknown field": {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "livenessProbe": {"grpc": {"port": 50051, "path": "/healthz"}}}]}}}},
    "wrong type": {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": "60s"}}}},
    "missing required field": {"spec": {"selector": None}},
}


@pytest.mark.parametrize("broken", sorted(BROKEN_PATCHES))
def test_schema_rejects_a_broken_overlay(tmp_path, broken):
    """An overlay on the real base with one mistake renders, and the validation refuses it."""
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": SERVER},
             **BROKEN_PATCHES[broken]}
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(patch))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [str(DEPLOY / "base")], "patches": [{"path": "patch.yaml"}]}))
    deployment = find(render(tmp_path), "Deployment", SERVER)
    for version in KUBERNETES_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, version, strict=True)


def _server_container(objs):
    return only_container(find(objs, "Deployment", SERVER))


def _set_env(container, name, value):
    env = [e for e in container["env"] if e["name"] != name]
    container["env"] = env + [{"name": name, "value": value}]


BROKEN_PROMISES = {
    "liveness over HTTP": lambda objs: _server_container(objs).update(
        livenessProbe={"httpGet": {"path": "/", "port": 50051}}),
    "probe on another port": lambda objs: _server_container(objs)["readinessProbe"].update(
        grpc={"port": 9090}),
    "grace shorter than preStop + drain": lambda objs: pod_spec(
        find(objs, "Deployment", SERVER)).update(terminationGracePeriodSeconds=35),
    "drain the server refuses": lambda objs: _set_env(
        _server_container(objs), "CLIP_GRPC_GRACE_SECONDS", "-1"),
    "misspelt server setting": lambda objs: _set_env(
        _server_container(objs), "CLIP_GRPC_MAX_CONECTION_AGE_S", "1"),
    "no connection ageing": lambda objs: _set_env(
        _server_container(objs), "CLIP_GRPC_MAX_CONNECTION_AGE_S", "0"),
    "service links on": lambda objs: pod_spec(find(objs, "Deployment", SERVER)).pop(
        "enableServiceLinks"),
    "running as root": lambda objs: pod_spec(find(objs, "Deployment", SERVER))[
        "securityContext"].update(runAsUser=0),
    "HPA on a metric the server lacks": lambda objs: find(
        objs, "HorizontalPodAutoscaler", SERVER)["spec"]["metrics"][0]["pods"]["metric"].update(
        name="clip_grpc_queue_depth"),
    "HPA target out of step with the batch size": lambda objs: _set_env(
        _server_container(objs), "CLIP_GRPC_MAX_IMAGE_BATCH_SIZE", "128"),
    "Service selecting no pod": lambda objs: find(objs, "Service", HEADLESS)["spec"][
        "selector"].update({"app.kubernetes.io/component": "serve"}),
    "bridge aimed at a ClusterIP name": lambda objs: _set_env(only_container(
        find(objs, "Deployment", BRIDGE)), "REST_BRIDGE_GRPC_TARGET", "clip-grpc:50051"),
}


def _set_probes(container, port):
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        container[kind]["grpc"]["port"] = port


def _drop_env(container, name):
    container["env"] = [e for e in container["env"] if e["name"] != name]


def _secret_volume(deployment):
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if "secret" in v]
    return volume


BROKEN_TLS_PROMISES = {
    "probes on the TLS port": lambda objs: _set_probes(_server_container(objs), 50051),
    "one probe on the TLS port": lambda objs: _server_container(objs)["livenessProbe"].update(
        grpc={"port": 50051}),
    "no health port": lambda objs: _drop_env(_server_container(objs), "CLIP_GRPC_HEALTH_PORT"),
    "health port on the metrics port": lambda objs: (
        _set_env(_server_container(objs), "CLIP_GRPC_HEALTH_PORT", "9090"),
        _set_probes(_server_container(objs), 9090)),
    "health port not declared": lambda objs: _server_container(objs).update(ports=[
        p for p in _server_container(objs)["ports"] if p["name"] != "health"]),
    "misspelt TLS setting": lambda objs: (
        _drop_env(_server_container(objs), "CLIP_GRPC_TLS_KEY"),
        _set_env(_server_container(objs), "CLIP_GRPC_TLS_KEYFILE", "/tls/tls.key")),
    "key outside the Secret": lambda objs: _set_env(
        _server_container(objs), "CLIP_GRPC_TLS_KEY", "/model/tls.key"),
    "writable certificate mount": lambda objs: [
        m for m in _server_container(objs)["volumeMounts"] if m["mountPath"] == "/tls"][0].update(
        readOnly=False),
    "bridge in plaintext": lambda objs: _drop_env(
        only_container(find(objs, "Deployment", BRIDGE)), "REST_BRIDGE_GRPC_ROOT_CERT"),
    "bridge's CA not projected": lambda objs: _secret_volume(find(objs, "Deployment", BRIDGE))[
        "secret"].update(items=[{"key": "tls.crt", "path": "tls.crt"}]),
    "mTLS without a bridge certificate": lambda objs: _set_env(
        _server_container(objs), "CLIP_GRPC_TLS_CLIENT_CA", "/tls/ca.crt"),
}


BROKEN_RENDERINGS = [("base", BROKEN_PROMISES), ("overlays/tls", BROKEN_TLS_PROMISES)]


@pytest.mark.parametrize(("rendering", "broken"), [
    (rendering, broken) for rendering, promises in BROKEN_RENDERINGS for broken in sorted(promises)
])
def test_invariant_checks_catch(rendering, broken):
    objs = objects(rendering)
    dict(BROKEN_RENDERINGS)[rendering][broken](objs)
    with pytest.raises(AssertionError):
        check_all(objs)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl to compare with")
@pytest.mark.parametrize("name", RENDERINGS)
def test_renderer_builds_what_kubectl_kustomize_builds(name):
    """The real kustomize (built into kubectl) makes the same objects, lists in the same order."""
    done = subprocess.run(["kubectl", "kustomize", str(DEPLOY / name)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(done.stdout)}
    mine = {(o["kind"], o["metadata"]["name"]): o for o in objects(name)}
    assert mine == theirs


def test_renderer_refuses_what_it_does_not_implement(tmp_path):
    base = str(DEPLOY / "base")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [base], "namePrefix": "x-"}))
    with pytest.raises(RenderError, match="namePrefix"):
        render(tmp_path)
    (tmp_path / "ghost.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ghost"}}))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [base], "patches": [{"path": "ghost.yaml"}]}))
    with pytest.raises(RenderError, match="matches 0 objects"):
        render(tmp_path)
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": SERVER},
         "spec": {"template": {"spec": {"imagePullSecrets": [{"name": "registry"}]}}}}))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [base], "patches": [{"path": "secrets.yaml"}]}))
    with pytest.raises(RenderError, match="merge key"):
        render(tmp_path)
