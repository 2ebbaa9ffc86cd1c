"""Offline checks of the deployment artefacts; `scripts/check-deploy` runs it.

1. hadolint lints deploy/Dockerfile; the chart's appVersion (its default
   image tag) is the workspace's version.
2. The real Helm engine (helm-python-sdk, Helm v4) lints the chart with
   --strict for the oldest and newest Kubernetes the chart supports, once per
   values file in helm/camshaft/ci/.
3. It renders the chart with each of those values files (which also checks
   them against values.schema.json), and kubernetes-validate --strict checks
   every rendered manifest against the Kubernetes API schemas of both
   versions.
4. Facts the chart promises are asserted on the rendered objects (probes,
   security contexts, the worker's headless Service and /dev/shm, etcd's
   compaction and quota, GPUs, the test hook, the config files' keys, the
   credentials: the workers' own, never a client token).
5. Every values file in helm/checks/invalid/ must be REFUSED by the render,
   with the message its first line names: the schema is enforced.
6. checkov scans the rendered manifests (the skipped checks and the findings
   accepted on one object are listed below, each with its reason).
7. The single-host systemd units pass `systemd-analyze verify` where systemd
   is installed; the coordinator's and worker's units load the one workers'
   credential the example config names.

Each step prints what it checks; the run ends with "N passed, M failed" and
exits non-zero on any failure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "camshaft"
INVALID = ROOT / "helm" / "checks" / "invalid"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SYSTEMD = ROOT / "deploy" / "systemd"
BIN = Path(sys.executable).parent

# The range the chart supports (Chart.yaml kubeVersion) that
# kubernetes-validate has schemas for.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]
RELEASE, NAMESPACE = "cs", "ml"

# checkov checks skipped, and why. Everything else must pass.
CHECKOV_SKIPS = {
    # Images are pinned by tag by default; image.digest.{cpu,cuda} and
    # etcd.image.digest pin by digest when a user has the digests.
    "CKV_K8S_43": "image digests are opt-in values (no published digests to default to)",
    # IfNotPresent with versioned tags is the usual default; Always costs a
    # registry round trip per pod start of a multi-GB CUDA image.
    "CKV_K8S_15": "imagePullPolicy IfNotPresent with versioned tags",
}
# Findings accepted on one object only: (check, kind, name suffix, why).
CHECKOV_ACCEPTED = [
    # Workers serve no port (they dial the coordinator, which drops a silent
    # worker within lease_ttl_ms): there is nothing to probe.
    ("CKV_K8S_8", "StatefulSet", "-worker", "a worker serves nothing to probe"),
    ("CKV_K8S_9", "StatefulSet", "-worker", "a worker serves nothing to probe"),
    # The helm test pod is a one-shot `ctl status`.
    ("CKV_K8S_8", "Pod", "-test-ctl-status", "one-shot test pod"),
    ("CKV_K8S_9", "Pod", "-test-ctl-status", "one-shot test pod"),
]


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"  ok    {what}")

    def fail(self, what: str, detail: str = "") -> None:
        self.failed.append(what)
        print(f"  FAIL  {what}")
        if detail:
            for line in detail.rstrip().splitlines()[:40]:
                print(f"        {line}")

    def expect(self, cond: bool, what: str, detail: str = "") -> None:
        if cond:
            self.ok(what)
        else:
            self.fail(what, detail)


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        sys.exit(f"check-deploy: {name} is missing; run scripts/setup --no-build")
    return found


def values_files() -> list[Path]:
    return sorted(CHART.glob("ci/*-values.yaml"))


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render(helm, values: dict) -> dict[str, str]:
    chart = helm.Chart.load(str(CHART))
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """(template, object) for every non-empty manifest, NOTES.txt left out."""
    out = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((template, doc))
    return out


def by_kind(docs, kind: str, suffix: str = "") -> list[dict]:
    return [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def one(docs, kind: str, suffix: str) -> dict:
    found = by_kind(docs, kind, suffix)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} named *{suffix}, found {len(found)}")
    return found[0]


def pod_spec(obj: dict) -> dict:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


# The config file's keys: crates/camshaft/src/cli.rs (FileConfig) and the
# services' Config structs (crates/*/src/config.rs, crates/store/src/etcd).
SECURED = {"tls", "auth_token_file", "auth_tokens_file", "health_listen", "metrics_listen"}
KNOWN_KEYS = {
    "top": {
        "store", "data_dir", "etcd", "tls", "auth_token_file", "auth_tokens_file", "worker_token_file",
        "coordinator", "worker", "explainer",
    },
    "coordinator": {
        "listen_addr", "lease_ttl_ms", "heartbeat_interval_ms", "rendezvous_timeout_ms", "worker_token_file",
        "explainer_address", "explainer_tls", "tensorboard_dir",
    } | SECURED,
    "explainer": {
        "listen_addr", "max_images_per_request", "max_image_bytes", "max_image_pixels",
        "max_batch", "max_batch_wait_ms", "max_queued_images", "model_replicas",
        "batch_invariant", "precision", "model_cache_size", "device",
        "preload", "warmup_batch_sizes", "models",
    } | SECURED,
    "worker": {
        "coordinator", "worker_id", "data_dir", "device", "loader_threads", "intra_op_threads",
        "labels", "ring_host",
        "tls", "auth_token_file", "metrics_listen",
    },
    "etcd": {
        "endpoints", "prefix", "username", "password", "tls", "connect_timeout_ms",
        "request_timeout_ms", "keep_checkpoints", "blob_dir",
    },
}


def effective(cfg: dict, table: str, key: str, top_key: str | None = None):
    """A credential key as the binary resolves it (cli.rs inherit_security):
    the service's table, else the top-level key it inherits."""
    return cfg.get(table, {}).get(key) or cfg.get(top_key or key)


def secret_file(spec: dict, path: str | None) -> tuple[str, str] | None:
    """(Secret, key) of the file at `path` in the pod's first container, or
    None when no Secret volume is mounted above it."""
    if not path:
        return None
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in spec["containers"][0].get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        secret = volumes.get(m["name"], {}).get("secret")
        if not (secret and path.startswith(prefix)):
            continue
        file = path.removeprefix(prefix)
        items = secret.get("items")
        if items is None:
            return secret["secretName"], file
        key = next((i["key"] for i in items if i["path"] == file), None)
        return (secret["secretName"], key) if key else None
    return None


def mounted_secrets(spec: dict) -> set[str]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return {
        volumes[m["name"]]["secret"]["secretName"]
        for ctr in spec["containers"] + spec.get("initContainers", [])
        for m in ctr.get("volumeMounts", [])
        if "secret" in volumes.get(m["name"], {})
    }


def unknown_keys(file: str, cfg: dict) -> list[str]:
    found = [f"{file}: {k}" for k in cfg if k not in KNOWN_KEYS["top"]]
    for table in ("coordinator", "explainer", "worker", "etcd"):
        found += [
            f"{file}: [{table}] {k}"
            for k in cfg.get(table, {})
            if k not in KNOWN_KEYS[table]
        ]
    return found


# --- steps -------------------------------------------------------------------


def check_dockerfile(c: Checks) -> None:
    step("hadolint deploy/Dockerfile")
    hadolint = tool("hadolint")
    r = subprocess.run(
        [hadolint, "--config", str(ROOT / "deploy" / "hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    c.expect(r.returncode == 0, "Dockerfile lints clean", r.stdout + r.stderr)


def check_versions(c: Checks) -> None:
    step("the chart's appVersion (the default image tag) is the workspace's version")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    c.expect(
        str(chart["appVersion"]) == workspace,
        f"Chart.yaml appVersion {chart['appVersion']} == Cargo.toml version {workspace}",
    )


def check_lint(c: Checks, helm) -> None:
    step(f"helm lint --strict (Helm {helm.helm_sdk_version()}), Kubernetes {', '.join(KUBE_VERSIONS)}")
    for path in values_files():
        for kube in KUBE_VERSIONS:
            report = helm.lint(str(CHART), load_values(path), strict=True, kube_version=f"v{kube}")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + [
                {"error": e} for e in report["errors"]
            ]
            c.expect(
                not problems,
                f"lint {path.name} on {kube}",
                "\n".join(f"{m.get('path', '')}: {m['error']}" for m in problems),
            )


def check_render_and_validate(c: Checks, helm, outdir: Path) -> dict[str, list]:
    step("render every ci/*-values.yaml and kubernetes-validate --strict each manifest")
    validate = tool("kubernetes-validate")
    rendered = {}
    for path in values_files():
        name = path.name.removesuffix("-values.yaml")
        try:
            docs = documents(render(helm, load_values(path)))
        except Exception as e:  # noqa: BLE001 - the engine's message is the report
            c.fail(f"render {path.name}", str(e))
            continue
        c.ok(f"render {path.name}: {len(docs)} objects")
        rendered[name] = docs
        folder = outdir / name
        folder.mkdir(parents=True)
        files = []
        for i, (_, doc) in enumerate(docs):
            f = folder / f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
            f.write_text(yaml.safe_dump(doc, sort_keys=False))
            files.append(str(f))
        for kube in KUBE_VERSIONS:
            r = subprocess.run(
                [validate, "-k", kube, "--strict", "--quiet", *files],
                capture_output=True,
                text=True,
            )
            output = (r.stdout + r.stderr).strip()
            # Only CRDs (ServiceMonitor) may lack a schema; anything else is a finding.
            findings = [
                line
                for line in output.splitlines()
                if line.strip() and "Couldn't find schema for kind ServiceMonitor" not in line
            ]
            c.expect(
                r.returncode == 0 and not findings,
                f"kubernetes-validate {kube} --strict: {name} ({len(files)} manifests)",
                "\n".join(findings),
            )
    return rendered


def check_facts(c: Checks, rendered: dict[str, list]) -> None:
    step("what the chart promises, on the rendered objects")
    for name, docs in rendered.items():
        try:
            facts(c, name, docs)
        except (AssertionError, KeyError, IndexError, TypeError) as e:
            c.fail(f"{name}: facts", f"{type(e).__name__}: {e}")
        try:
            credential_facts(c, name, docs, load_values(CHART / "ci" / f"{name}-values.yaml"))
        except (AssertionError, KeyError, IndexError, TypeError) as e:
            c.fail(f"{name}: credential facts", f"{type(e).__name__}: {e}")


def facts(c: Checks, name: str, docs) -> None:
    # The object kinds the issue asks for.
    kinds = {(d["kind"], d["metadata"]["name"].removeprefix(f"{RELEASE}-camshaft")) for _, d in docs}
    for want in [
        ("Deployment", "-coordinator"),
        ("Service", "-coordinator"),
        ("StatefulSet", "-worker"),
        ("Service", "-worker"),
        ("Deployment", "-explainer"),
        ("Service", "-explainer"),
        ("PodDisruptionBudget", "-explainer"),
        ("ConfigMap", "-config"),
        ("Pod", "-test-ctl-status"),
    ]:
        c.expect(want in kinds, f"{name}: has {want[0]} {want[1][1:]}")

    # Security: every pod non-root with a read-only root filesystem, every
    # container with resources.
    pods = [d for _, d in docs if d["kind"] in ("Deployment", "StatefulSet", "Pod")]
    bad = []
    for obj in pods:
        spec = pod_spec(obj)
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            bad.append(f"{obj['metadata']['name']}: pod runAsNonRoot")
        for ctr in spec["containers"] + spec.get("initContainers", []):
            sc = ctr.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False):
                bad.append(f"{obj['metadata']['name']}/{ctr['name']}: read-only root, no escalation")
            if not ctr.get("resources", {}).get("limits", {}).get("memory"):
                bad.append(f"{obj['metadata']['name']}/{ctr['name']}: memory limit")
    c.expect(not bad, f"{name}: non-root, read-only root fs, resources everywhere", "\n".join(bad))

    # Labels.
    missing = [
        d["metadata"]["name"]
        for _, d in docs
        if not {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"}
        <= set(d["metadata"].get("labels", {}))
    ]
    c.expect(not missing, f"{name}: app.kubernetes.io/* labels on every object", ", ".join(missing))

    # gRPC probes on the standard health service: the main port, or with
    # TLS (which the kubelet's gRPC probe cannot speak) the plaintext health
    # listener the service's config opens.
    cm = one(docs, "ConfigMap", "-config")
    configs = {f: tomllib.loads(cm["data"][f"{f}.toml"]) for f in ("coordinator", "explainer", "worker")}
    tls = "tls" in configs["coordinator"]
    for svc in ("coordinator", "explainer"):
        ctr = pod_spec(one(docs, "Deployment", f"-{svc}"))["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
        port = ports["health"] if tls else ports["grpc"]
        if tls:
            listen = configs[svc][svc].get("health_listen", "")
            c.expect(listen.endswith(f":{port}"), f"{name}: {svc} health_listen {listen} is the probed port")
        probes = [ctr.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")]
        c.expect(
            all(p and p.get("grpc", {}).get("port") == port for p in probes),
            f"{name}: {svc} gRPC health probes on {port}{' (plaintext health port: TLS)' if tls else ''}",
        )
    if tls:
        worker_tls = configs["worker"]["worker"].get("tls", {})
        c.expect(
            configs["worker"]["worker"]["coordinator"].startswith("https://") and "ca" in worker_tls,
            f"{name}: workers dial the coordinator over TLS, trusting [worker.tls] ca",
        )

    # The web console's explain page: the coordinator forwards to the
    # explainer Service (trusting the CA with TLS), which lets it through;
    # an Ingress, if any, leads to the coordinator's port.
    coord_cfg = configs["coordinator"]["coordinator"]
    explainer_svc = one(docs, "Service", "-explainer")
    want = f"{'https' if tls else 'http'}://{explainer_svc['metadata']['name']}.{explainer_svc['metadata']['namespace']}.svc."
    c.expect(
        coord_cfg.get("explainer_address", "").startswith(want)
        and coord_cfg["explainer_address"].endswith(f":{explainer_svc['spec']['ports'][0]['port']}")
        and (not tls or "ca" in coord_cfg.get("explainer_tls", {})),
        f"{name}: the coordinator forwards the console's explain calls to the explainer Service",
        str(coord_cfg.get("explainer_address")),
    )
    policy = by_kind(docs, "NetworkPolicy", "-explainer")
    if policy:
        sources = policy[0]["spec"]["ingress"][0].get("from")
        coordinator_pods = pod_spec(one(docs, "Deployment", "-coordinator")) and one(docs, "Deployment", "-coordinator")["spec"]["selector"]["matchLabels"]
        c.expect(
            sources is None or any(s.get("podSelector", {}).get("matchLabels") == coordinator_pods for s in sources),
            f"{name}: the explainer's NetworkPolicy admits the coordinator",
        )
    for ingress in by_kind(docs, "Ingress", "-coordinator"):
        coordinator_svc = one(docs, "Service", "-coordinator")
        backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        c.expect(
            all(b["name"] == coordinator_svc["metadata"]["name"]
                and b["port"].get("name") in {p["name"] for p in coordinator_svc["spec"]["ports"]} for b in backends),
            f"{name}: the console's Ingress leads to the coordinator Service's port",
        )

    # Workers: headless Service publishing not-ready addresses, the pod name
    # as worker id, memory-backed /dev/shm, GPUs when asked.
    sts = one(docs, "StatefulSet", "-worker")
    svc = one(docs, "Service", "-worker")
    c.expect(
        svc["spec"].get("clusterIP") == "None"
        and svc["spec"].get("publishNotReadyAddresses") is True
        and sts["spec"]["serviceName"] == svc["metadata"]["name"],
        f"{name}: worker headless Service publishes not-ready addresses",
    )
    spec = pod_spec(sts)
    ctr = spec["containers"][0]
    c.expect(
        ctr["args"][:1] == ["worker"] and ctr["args"][-2:] == ["--worker-id", "$(POD_NAME)"],
        f"{name}: worker id from the pod name (ordinal)",
        str(ctr["args"]),
    )
    shm = [v for v in spec["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory" and v["name"] == "dshm"]
    mounted = any(m["mountPath"] == "/dev/shm" and m["name"] == "dshm" for m in ctr["volumeMounts"])
    c.expect(bool(shm) and mounted, f"{name}: worker /dev/shm is memory-backed")
    worker_cfg = configs["worker"]["worker"]
    gpus = ctr["resources"].get("limits", {}).get("nvidia.com/gpu")
    if worker_cfg["device"] == "cuda":
        c.expect(
            bool(gpus) and ctr["image"].endswith("-cuda") and spec.get("tolerations"),
            f"{name}: GPU workers request nvidia.com/gpu ({gpus}), run the -cuda image, tolerate GPU taints",
        )
    else:
        c.expect(not gpus and ctr["image"].endswith("-cpu"), f"{name}: CPU workers ask for no GPU")

    # The config files parse as TOML and hold only keys the services know
    unknown = []
    for file in ("coordinator.toml", "explainer.toml", "worker.toml"):
        cfg = configs[file.removesuffix(".toml")]
        unknown += unknown_keys(file, cfg)
    c.expect(not unknown, f"{name}: config files hold only keys the services read", "\n".join(unknown))
    store = configs["coordinator"]["store"]
    c.expect(re.fullmatch(r"etcds?://[^/]+(,[^/]+)*(/[^/]+)+/", store) is not None, f"{name}: store URL {store}")

    # The bundled etcd: auto-compaction and a quota.
    etcd = by_kind(docs, "StatefulSet", "-etcd")
    if etcd:
        args = pod_spec(etcd[0])["containers"][0]["args"]
        quota = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--quota-backend-bytes=")), 0)
        c.expect(
            any(a.startswith("--auto-compaction-retention=") for a in args) and 0 < quota <= 8 << 30,
            f"{name}: bundled etcd compacts and has a {quota >> 20} MiB quota",
        )
        members = etcd[0]["spec"]["replicas"]
        c.expect(
            etcd[0]["spec"]["podManagementPolicy"] == "Parallel"
            and store.count(",") + 1 == members,
            f"{name}: {members} etcd member(s) start in parallel and are all in the store URL",
        )
    else:
        c.expect(
            not store.startswith("etcd://") or "etcd-headless" not in store,
            f"{name}: external etcd only",
        )

    # The explainer scales and is protected.
    hpa = by_kind(docs, "HorizontalPodAutoscaler", "-explainer")
    deploy = one(docs, "Deployment", "-explainer")
    c.expect(
        bool(hpa) != ("replicas" in deploy["spec"]),
        f"{name}: explainer replicas set by {'the HPA' if hpa else 'the Deployment'}",
    )

    # helm test runs `ctl status`.
    test = one(docs, "Pod", "-test-ctl-status")
    tctr = test["spec"]["containers"][0]
    c.expect(
        test["metadata"]["annotations"].get("helm.sh/hook") == "test"
        and [*tctr["command"], *tctr["args"]] == ["ctl", "status"],
        f"{name}: helm test hook runs ctl status",
    )

    # The Grafana dashboard (metrics.grafanaDashboard) queries only series
    # the explainer exports (the table in crates/explainer/src/metrics.rs).
    for board in by_kind(docs, "ConfigMap", "-grafana-dashboard"):
        exported = set(re.findall(r"^//! \| `(camshaft_explainer_\w+)`", (ROOT / "crates/explainer/src/metrics.rs").read_text(), re.M))
        dashboard = json.loads(next(iter(board["data"].values())))
        queried = {
            re.sub(r"_(bucket|sum|count)$", "", m)
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for m in re.findall(r"camshaft_explainer_\w+", target["expr"])
        }
        c.expect(
            bool(queried) and queried <= exported,
            f"{name}: the Grafana dashboard queries exported explainer series ({sorted(queried - exported) or 'all known'})",
        )


def credential_facts(c: Checks, name: str, docs, values: dict) -> None:
    """The workers' credential is always on (a Secret the chart makes, or
    auth.workerTokenSecret), mounted into the coordinator and every worker
    pod and named by both config files; workers never hold a client token
    (WorkerLink refuses one); client tokens and the tokens file go to the
    servers; ServiceMonitors send a client token where /metrics asks for one."""
    auth = values.get("auth", {})
    cm = one(docs, "ConfigMap", "-config")
    configs = {f: tomllib.loads(cm["data"][f"{f}.toml"]) for f in ("coordinator", "explainer", "worker")}
    specs = {
        "coordinator": pod_spec(one(docs, "Deployment", "-coordinator")),
        "explainer": pod_spec(one(docs, "Deployment", "-explainer")),
        "worker": pod_spec(one(docs, "StatefulSet", "-worker")),
    }
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}

    # The coordinator accepts, and the workers present, one Secret's key.
    accepts = secret_file(specs["coordinator"], effective(configs["coordinator"], "coordinator", "worker_token_file"))
    presents = secret_file(specs["worker"], effective(configs["worker"], "worker", "auth_token_file", "worker_token_file"))
    c.expect(
        accepts is not None and accepts == presents,
        f"{name}: coordinator's worker_token_file and the workers' credential are one mounted Secret key {accepts}",
        f"coordinator accepts {accepts}, workers present {presents}",
    )
    want_secret = auth.get("workerTokenSecret") or f"{RELEASE}-camshaft-worker-token"
    want_key = auth.get("workerTokenKey", "token")
    c.expect(accepts == (want_secret, want_key), f"{name}: the workers' credential is {want_secret}/{want_key}")
    if auth.get("workerTokenSecret"):
        c.expect(
            f"{RELEASE}-camshaft-worker-token" not in secrets,
            f"{name}: no chart-made worker Secret beside auth.workerTokenSecret",
        )
    else:
        data = secrets.get(want_secret, {}).get("data", {})
        token = base64.b64decode(data.get(want_key, "")).decode()
        c.expect(len(token) >= 32, f"{name}: the chart makes Secret {want_secret} with a {len(token)}-character token")
    c.expect(
        want_secret not in mounted_secrets(specs["explainer"]),
        f"{name}: the explainers do not mount the workers' credential",
    )

    # Client credentials: the servers', never the workers'.
    client = {
        svc: {
            secret_file(specs[svc], effective(configs[svc], svc, "auth_token_file")),
            secret_file(specs[svc], effective(configs[svc], svc, "auth_tokens_file")),
        } - {None}
        for svc in ("coordinator", "explainer")
    }
    client_secrets = {s for files in client.values() for s, _ in files}
    worker_cfg = configs["worker"]
    c.expect(
        presents not in client["coordinator"] | client["explainer"]
        and not {"auth_token_file", "auth_tokens_file"} & set(worker_cfg)
        and not client_secrets & mounted_secrets(specs["worker"]),
        f"{name}: workers present no client token and mount no client credential",
        f"worker credential {presents}; client {client}; worker mounts {mounted_secrets(specs['worker'])}",
    )
    if auth.get("enabled"):
        want = (auth.get("existingSecret") or f"{RELEASE}-camshaft-auth", auth.get("tokenKey", "token"))
        c.expect(
            all(want in files for files in client.values()),
            f"{name}: coordinator and explainers read the client token {want[0]}/{want[1]} (auth_token_file)",
        )
        made = secrets.get(f"{RELEASE}-camshaft-auth", {}).get("data", {}).get(want[1])
        worker_made = secrets.get(want_secret, {}).get("data", {}).get(want_key)
        c.expect(not (made and made == worker_made), f"{name}: the client token is not the workers' credential")
    if auth.get("tokensSecret"):
        want = (auth["tokensSecret"], auth.get("tokensKey", "tokens.csv"))
        c.expect(
            all(want in files for files in client.values()),
            f"{name}: coordinator and explainers read the tokens file {want[0]}/{want[1]} (auth_tokens_file)",
        )
    if not auth.get("enabled") and not auth.get("tokensSecret"):
        c.expect(not any(client.values()), f"{name}: no client tokens (clients are anonymous)")

    # A server's /metrics asks for a client token when its gRPC port does.
    monitors = {d["metadata"]["name"].rsplit("-", 1)[-1]: d for d in by_kind(docs, "ServiceMonitor")}
    if monitors:
        scrape = values.get("metrics", {}).get("serviceMonitor", {}).get("authorization", {})
        want = None
        if scrape.get("secretName"):
            want = {"name": scrape["secretName"], "key": scrape.get("key", "token")}
        elif auth.get("enabled"):
            want = {"name": auth.get("existingSecret") or f"{RELEASE}-camshaft-auth", "key": auth.get("tokenKey", "token")}
        sent = {
            svc: (m["spec"]["endpoints"][0].get("authorization") or {}).get("credentials")
            for svc, m in monitors.items()
        }
        c.expect(
            sent.get("coordinator") == want and sent.get("explainer") == want and not sent.get("worker"),
            f"{name}: ServiceMonitors send {want and want['name']} to the servers' /metrics, none to the workers'",
            str(sent),
        )


def check_invalid(c: Checks, helm) -> None:
    step("values that break values.schema.json (or the chart's own rules) are REFUSED")
    files = sorted(INVALID.glob("*.yaml"))
    c.expect(bool(files), f"{len(files)} invalid values files in {INVALID.relative_to(ROOT)}")
    for path in files:
        first = path.read_text().splitlines()[0]
        m = re.match(r"#\s*refused by the (schema|chart):\s*(.+)", first)
        if not m:
            c.fail(f"{path.name}: the first line must be '# refused by the schema|chart: <part of the message>'")
            continue
        by, expected = m.group(1), m.group(2).strip()
        try:
            render(helm, load_values(path))
        except Exception as e:  # noqa: BLE001 - the engine's message is the report
            message = " ".join(str(e).split())
            # The schema's refusals are HelmValuesError, raised before any
            # template runs; the chart's are `fail` calls in templates.
            right_kind = (
                type(e).__name__ == "HelmValuesError" and "schema" in message
                if by == "schema"
                else type(e).__name__ == "HelmRenderError"
            )
            c.expect(
                right_kind and expected in message,
                f"{path.name} refused by the {by} ({expected})",
                f"{type(e).__name__}: {message}",
            )
        else:
            c.fail(f"{path.name} was ACCEPTED; the {by} must refuse it ({expected})")


def check_checkov(c: Checks, outdir: Path) -> None:
    step(f"checkov on the rendered manifests (skipping {', '.join(sorted(CHECKOV_SKIPS))})")
    checkov = BIN / "checkov"
    if not checkov.exists():
        checkov = ROOT / ".venv" / "checkov" / "bin" / "checkov"
    if not checkov.exists():
        c.fail("checkov is missing; run scripts/setup --no-build")
        return
    # One run per values file (its graph checks match NetworkPolicies to
    # pods, which must not mix releases), all at once.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    runs = {
        folder.name: subprocess.Popen(
            [
                str(checkov), "--quiet", "--compact", "--framework", "kubernetes",
                "--skip-download", "--output", "json",
                "--skip-check", ",".join(sorted(CHECKOV_SKIPS)),
                "--directory", str(folder),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for folder in sorted(p for p in outdir.iterdir() if p.is_dir())
    }
    if not runs:
        c.fail("checkov: nothing rendered to scan")
    for name, proc in runs.items():
        out, err = proc.communicate()
        try:
            report = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            c.fail(f"checkov {name}: unreadable output", out[-3000:] + err[-2000:])
            continue
        reports = report if isinstance(report, list) else [report]
        failed = [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]
        passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
        unexpected = []
        for f in failed:
            kind, _, name_ = f["resource"].partition(".")
            obj_name = name_.rsplit(".", 1)[-1]
            if not any(
                f["check_id"] == check and kind == k and obj_name.endswith(suffix)
                for check, k, suffix, _ in CHECKOV_ACCEPTED
            ):
                unexpected.append(f"{f['check_id']} {f['check_name']}: {f['resource']}")
        c.expect(
            not unexpected and passed > 0,
            f"checkov {name}: {passed} checks passed, {len(failed) - len(unexpected)} accepted findings",
            "\n".join(unexpected) or err[-2000:],
        )


def check_systemd(c: Checks) -> None:
    step("single host: the example config and the systemd units (systemd-analyze verify)")
    example = SYSTEMD / "camshaft.toml"
    try:
        cfg = tomllib.loads(example.read_text())
        bad = unknown_keys(example.name, cfg)
        c.expect(not bad, f"{example.relative_to(ROOT)} parses and holds only known keys", "\n".join(bad))
        # The separate coordinator (DynamicUser, read-only system, no data
        # dir) cannot make <data_dir>/worker-token, and remote workers need
        # the same file: both units load one credential, the config names it.
        sources = {}
        for unit, table, key, top in [
            ("camshaft-coordinator.service", "coordinator", "worker_token_file", None),
            ("camshaft-worker.service", "worker", "auth_token_file", "worker_token_file"),
        ]:
            path = effective(cfg, table, key, top) or ""
            prefix = f"/run/credentials/{unit}/"
            loads = dict(
                line.removeprefix("LoadCredential=").split(":", 1)
                for line in (SYSTEMD / unit).read_text().splitlines()
                if line.startswith("LoadCredential=")
            )
            sources[unit] = loads.get(path.removeprefix(prefix)) if path.startswith(prefix) else None
        c.expect(
            len(set(sources.values())) == 1 and None not in sources.values(),
            f"the coordinator and worker units load one workers' credential ({next(iter(sources.values()))}) that camshaft.toml names",
            str(sources),
        )
    except tomllib.TOMLDecodeError as e:
        c.fail(f"{example.relative_to(ROOT)} is not TOML", str(e))
    analyze = shutil.which("systemd-analyze")
    units = sorted(SYSTEMD.glob("*.service"))
    c.expect(bool(units), f"{len(units)} units in deploy/systemd")
    if not analyze:
        print("  skip  systemd-analyze is not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        # verify wants the ExecStart binaries to exist: stand-ins on a copy.
        bindir = Path(tmp) / "bin"
        bindir.mkdir()
        for exe in ("camshaft", "ctl"):
            (bindir / exe).write_text("#!/bin/sh\n")
            (bindir / exe).chmod(0o755)
        for unit in units:
            text = unit.read_text().replace("/usr/local/bin/", f"{bindir}/")
            copy = Path(tmp) / unit.name
            copy.write_text(text)
            r = subprocess.run(
                [analyze, "verify", "--man=no", str(copy)],
                capture_output=True,
                text=True,
            )
            noise = [
                line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "Failed to prepare filename" not in line
            ]
            c.expect(r.returncode == 0 and not noise, f"systemd-analyze verify {unit.name}", "\n".join(noise))


def main() -> int:
    start = time.monotonic()
    import helm_python as helm  # noqa: PLC0415 - after the tool check in scripts/check-deploy

    c = Checks()
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as tmp:
        outdir = Path(tmp)
        check_dockerfile(c)
        check_versions(c)
        check_lint(c, helm)
        rendered = check_render_and_validate(c, helm, outdir)
        check_facts(c, rendered)
        check_invalid(c, helm)
        check_checkov(c, outdir)
        check_systemd(c)
    took = time.monotonic() - start
    print(f"\ncheck-deploy: {took:.0f} s")
    if c.failed:
        print("failed:")
        for what in c.failed:
            print(f"  - {what}")
    print(f"check-deploy: {c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
