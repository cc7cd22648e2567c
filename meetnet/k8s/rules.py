"""Invariants of a rendered meetnet deployment that no schema can express.

Each rule takes the rendered objects and returns problems, each saying what to change:
the processors' ceiling is the readings topic's partition count, replication fits the
brokers, the settings are valid and complete, names refer to objects that exist, and Secrets
are never part of the repository.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from meetnet.k8s.render import Problem, name_of
from meetnet.settings import Settings

Doc = dict[str, Any]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
# Settings the manifests pass that land with other branches (k8s/README.md, "Pending"), and
# variables that are not Settings fields by design.
PENDING_SETTINGS: set[str] = set()
NOT_FIELDS = {"MEETNET_SECRETS_DIR", "MEETNET_INSTANCE"}
REQUIRED_SETTINGS = (
    "MEETNET_DATABASE_URL",  # from the secrets directory (checked through the mounts)
    "MEETNET_MQTT_URL",
    "MEETNET_KAFKA_BOOTSTRAP",
    "MEETNET_HEALTH_PORT",
    "MEETNET_HEALTH_HOST",
    "MEETNET_SECRETS_DIR",
)
TOPIC_SETTINGS = (
    "MEETNET_KAFKA_READINGS_TOPIC",
    "MEETNET_KAFKA_DEADLETTER_TOPIC",
    "MEETNET_KAFKA_ALERTS_TOPIC",
)


@dataclass
class Render:
    """The rendered objects with the look-ups the rules share."""

    docs: list[Doc]

    def kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc | None:
        return next((d for d in self.kind(kind) if d["metadata"]["name"] == name), None)

    def component(self, component: str) -> Doc | None:
        """The workload of a meetnet component (app.kubernetes.io/component)."""
        for d in self.docs:
            labels = d.get("metadata", {}).get("labels", {})
            if (
                d["kind"] in WORKLOAD_KINDS
                and labels.get("app.kubernetes.io/component") == component
            ):
                return d
        return None

    def config(self) -> tuple[Doc | None, dict[str, str]]:
        """meetnet's settings ConfigMap (meetnet-config, with kustomize's hash suffix)."""
        for d in self.kind("ConfigMap"):
            name = d["metadata"]["name"]
            if name == "meetnet-config" or name.startswith("meetnet-config-"):
                return d, {k: str(v) for k, v in (d.get("data") or {}).items()}
        return None, {}

    def topic(self, topic_name: str) -> Doc | None:
        for d in self.kind("KafkaTopic"):
            if d["spec"].get("topicName", d["metadata"]["name"]) == topic_name:
                return d
        return None


def pod_specs(doc: Doc) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    if doc["kind"] in WORKLOAD_KINDS:
        yield spec.get("template", {}).get("spec", {})


def pod_labels(doc: Doc) -> dict[str, str]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return dict(spec.get("template", {}).get("metadata", {}).get("labels", {}))


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        has = e["key"] in labels
        val = labels.get(e["key"])
        op = e["operator"]
        ok = (
            ok
            and {
                "In": has and val in e.get("values", []),
                "NotIn": not has or val not in e.get("values", []),
                "Exists": has,
                "DoesNotExist": not has,
            }[op]
        )
    return ok


# --- the settings ------------------------------------------------------------------------------
class _FromInitOnly(Settings):
    """Settings validated from the given values only (not this process's environment)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def check_settings(r: Render) -> list[Problem]:
    cm, data = r.config()
    if cm is None:
        return [Problem("ConfigMap/meetnet-config", "missing: every meetnet pod reads it")]
    where = name_of(cm)
    fields = Settings.model_fields
    problems = []
    values: dict[str, Any] = {}
    for key, value in data.items():
        field = key.removeprefix("MEETNET_").lower()
        if field in fields:
            values[field] = value
        elif key not in PENDING_SETTINGS | NOT_FIELDS:
            problems.append(Problem(where, f"{key} is not a meetnet setting (a typo?)"))
    try:
        _FromInitOnly(**values)
    except ValidationError as e:
        for err in e.errors():
            key = "MEETNET_" + str(err["loc"][0]).upper() if err["loc"] else "?"
            problems.append(Problem(where, f"{key}={data.get(key)!r}: {err['msg']}"))
    secret_files = {f"MEETNET_{f.upper()}" for f in _secret_files(r)}
    for key in REQUIRED_SETTINGS:
        if key not in data and key not in secret_files:
            problems.append(Problem(where, f"{key} is required and not set"))
    host = data.get("MEETNET_HEALTH_HOST")
    if host not in (None, "0.0.0.0", "::"):
        problems.append(
            Problem(
                where, f"MEETNET_HEALTH_HOST={host!r}: the kubelet probes the pod's IP; use 0.0.0.0"
            )
        )
    return problems


def _secret_files(r: Render) -> set[str]:
    """Settings that the processor pod gets as files from Secrets (lower-case field names)."""
    proc = r.component("processor")
    out: set[str] = set()
    for pod in pod_specs(proc) if proc else ():
        for vol in pod.get("volumes", []):
            for src in vol.get("projected", {}).get("sources", []):
                for item in src.get("secret", {}).get("items", []):
                    out.add(item["path"].removeprefix("meetnet_"))
    return out


def check_topics(r: Render) -> list[Problem]:
    cm, data = r.config()
    problems = []
    for key in TOPIC_SETTINGS:
        if key in data and r.topic(data[key]) is None:
            problems.append(
                Problem(
                    name_of(cm) if cm else "ConfigMap/meetnet-config",
                    f"{key}={data[key]} has no KafkaTopic: topics are not created automatically "
                    "(auto.create.topics.enable is false)",
                )
            )
    kafkas = {d["metadata"]["name"] for d in r.kind("Kafka")}
    for t in r.kind("KafkaTopic"):
        cluster = t["metadata"].get("labels", {}).get("strimzi.io/cluster")
        if cluster not in kafkas:
            problems.append(Problem(name_of(t), f"strimzi.io/cluster={cluster!r} is no Kafka here"))
    return problems


# --- Kafka replication ---------------------------------------------------------------------------
def _nodes(r: Render, cluster: str, role: str) -> int:
    return sum(
        int(p["spec"].get("replicas", 0))
        for p in r.kind("KafkaNodePool")
        if p["metadata"].get("labels", {}).get("strimzi.io/cluster") == cluster
        and role in p["spec"].get("roles", [])
    )


def check_replication(r: Render) -> list[Problem]:
    problems = []
    for k in r.kind("Kafka"):
        name = k["metadata"]["name"]
        brokers, controllers = _nodes(r, name, "broker"), _nodes(r, name, "controller")
        if brokers < 1 or controllers < 1:
            problems.append(
                Problem(
                    name_of(k),
                    f"{brokers} broker and {controllers} controller nodes: "
                    "KafkaNodePools must provide at least one of each",
                )
            )
        elif controllers % 2 == 0:
            problems.append(
                Problem(
                    name_of(k),
                    f"{controllers} KRaft controllers: a quorum of an even "
                    "number survives no more failures than one less; use an odd number",
                )
            )
        config = k["spec"]["kafka"].get("config", {})
        for key in (
            "default.replication.factor",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
        ):
            if key in config and int(config[key]) > brokers:
                problems.append(
                    Problem(name_of(k), f"{key}={config[key]} exceeds the {brokers} brokers")
                )
        default_isr = int(config.get("min.insync.replicas", 1))
        for t in r.kind("KafkaTopic"):
            if t["metadata"].get("labels", {}).get("strimzi.io/cluster") != name:
                continue
            replicas = int(t["spec"]["replicas"])
            isr = int(t["spec"].get("config", {}).get("min.insync.replicas", default_isr))
            if replicas > brokers:
                problems.append(
                    Problem(
                        name_of(t), f"replicas {replicas} exceed the {brokers} brokers of {name}"
                    )
                )
            if isr > replicas:
                problems.append(
                    Problem(name_of(t), f"min.insync.replicas {isr} > replicas {replicas}")
                )
            elif replicas > 1 and isr == replicas:
                problems.append(
                    Problem(
                        name_of(t),
                        f"min.insync.replicas {isr} = replicas: one broker down "
                        "stops every acks=all producer (the gateways); use replicas - 1",
                    )
                )
            if replicas >= 3 and isr < 2:
                problems.append(
                    Problem(
                        name_of(t),
                        f"replicas {replicas} with min.insync.replicas {isr}: an "
                        "acknowledged write may live on one broker only; use at least 2",
                    )
                )
    return problems


# --- scaling -------------------------------------------------------------------------------------
def _targets(r: Render, kind: str, workload: Doc) -> list[Doc]:
    name = workload["metadata"]["name"]
    ref = "scaleTargetRef"
    return [
        d
        for d in r.kind(kind)
        if d["spec"][ref]["name"] == name
        and d["spec"][ref].get("kind", "Deployment") == workload["kind"]
    ]


def _bootstrap(r: Render, cluster: str) -> tuple[str, int] | None:
    k = r.get("Kafka", cluster)
    if k is None:
        return None
    plain = [li for li in k["spec"]["kafka"]["listeners"] if not li.get("tls")]
    port = int(plain[0]["port"]) if plain else 9092
    return f"{cluster}-kafka-bootstrap", port


def check_processor_ceiling(r: Render) -> list[Problem]:
    proc = r.component("processor")
    _, data = r.config()
    topic_name = data.get(
        "MEETNET_KAFKA_READINGS_TOPIC", Settings.model_fields["kafka_readings_topic"].default
    )
    topic = r.topic(topic_name)
    if proc is None or topic is None:
        return []  # reported by check_topics / check_references
    partitions = int(topic["spec"]["partitions"])
    ceiling = f"the {partitions} partitions of {topic_name} ({name_of(topic)})"
    idle = "processors beyond the partition count get no partition and idle"
    problems = []
    replicas = proc["spec"].get("replicas", 1)
    if replicas > partitions:
        problems.append(Problem(name_of(proc), f"replicas {replicas} exceed {ceiling}: {idle}"))
    for hpa in _targets(r, "HorizontalPodAutoscaler", proc):
        if hpa["spec"]["maxReplicas"] > partitions:
            problems.append(
                Problem(
                    name_of(hpa),
                    f"maxReplicas {hpa['spec']['maxReplicas']} exceeds {ceiling}: {idle}",
                )
            )
    group = data.get("MEETNET_PROCESSOR_GROUP", Settings.model_fields["processor_group"].default)
    cluster = topic["metadata"].get("labels", {}).get("strimzi.io/cluster", "")
    for so in _targets(r, "ScaledObject", proc):
        spec, where = so["spec"], name_of(so)
        top, bottom = spec.get("maxReplicaCount", 100), spec.get("minReplicaCount", 0)
        if top > partitions:
            problems.append(
                Problem(
                    where,
                    f"maxReplicaCount {top} exceeds {ceiling}: {idle}; lower "
                    "maxReplicaCount or raise the topic's partitions",
                )
            )
        if bottom > top:
            problems.append(Problem(where, f"minReplicaCount {bottom} > maxReplicaCount {top}"))
        for trig in spec["triggers"]:
            if trig["type"] != "kafka":
                continue
            md = trig["metadata"]
            if md.get("allowIdleConsumers", "false") != "false":
                problems.append(Problem(where, f'allowIdleConsumers must be "false": {idle}'))
            if md.get("topic") != topic_name:
                problems.append(
                    Problem(
                        where,
                        f"kafka trigger topic {md.get('topic')!r} is not "
                        f"MEETNET_KAFKA_READINGS_TOPIC={topic_name!r}",
                    )
                )
            if md.get("consumerGroup") != group:
                problems.append(
                    Problem(
                        where,
                        f"kafka trigger consumerGroup "
                        f"{md.get('consumerGroup')!r} is not MEETNET_PROCESSOR_GROUP={group!r}",
                    )
                )
            boot = _bootstrap(r, cluster)
            ns = so["metadata"].get("namespace", "")
            if boot is not None:
                want = [
                    f"{boot[0]}.{ns}.svc:{boot[1]}",
                    f"{boot[0]}.{ns}.svc.cluster.local:{boot[1]}",
                ]
                if md.get("bootstrapServers") not in want:
                    problems.append(
                        Problem(
                            where,
                            f"kafka trigger bootstrapServers {md.get('bootstrapServers')!r}"
                            f": KEDA connects from its own namespace, so it must be {want[0]!r}",
                        )
                    )
    return problems


def check_gateways(r: Render) -> list[Problem]:
    gw = r.component("gateway")
    if gw is None:
        return []
    problems = []
    if gw["kind"] != "StatefulSet":
        problems.append(
            Problem(
                name_of(gw),
                f"a {gw['kind']}: its pods get new names on every restart, so "
                "MQTT client ids would change and the broker would keep the old sessions' "
                "messages; run gateways as a StatefulSet",
            )
        )
    for pod in pod_specs(gw):
        for c in pod.get("containers", []):
            env = {e["name"]: e for e in c.get("env", [])}
            ref = env.get("MEETNET_GATEWAY_CLIENT_ID", {}).get("valueFrom", {}).get("fieldRef", {})
            if ref.get("fieldPath") != "metadata.name":
                problems.append(
                    Problem(
                        name_of(gw),
                        "MEETNET_GATEWAY_CLIENT_ID must come from the pod name "
                        "(fieldRef metadata.name): one stable, unique client id per gateway",
                    )
                )
    mosquitto = r.component("mosquitto") is not None
    for so in _targets(r, "ScaledObject", gw):
        down = (
            so["spec"]
            .get("advanced", {})
            .get("horizontalPodAutoscalerConfig", {})
            .get("behavior", {})
            .get("scaleDown", {})
        )
        if mosquitto and down.get("selectPolicy") != "Disabled":
            problems.append(
                Problem(
                    name_of(so),
                    "scaling gateways in strands the removed gateway's share of "
                    "messages in its Mosquitto session: set advanced.horizontalPodAutoscalerConfig"
                    ".behavior.scaleDown.selectPolicy: Disabled",
                )
            )
    return problems


def check_health_probes(r: Render) -> list[Problem]:
    _, data = r.config()
    try:
        port = int(data.get("MEETNET_HEALTH_PORT", "0"))
    except ValueError:
        return []  # reported by check_settings
    problems = []
    for component in ("gateway", "processor"):
        w = r.component(component)
        if w is None:
            continue
        for pod in pod_specs(w):
            for c in pod.get("containers", []):
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
                    get = c.get(probe, {}).get("httpGet")
                    if get is None:
                        problems.append(
                            Problem(name_of(w), f"{c['name']}: {probe} must GET {path}")
                        )
                        continue
                    target = ports.get(get["port"], get["port"])
                    if get.get("path") != path or target != port:
                        problems.append(
                            Problem(
                                name_of(w),
                                f"{c['name']}: {probe} GETs {get.get('path')} on "
                                f"port {target}; the worker serves {path} on "
                                f"MEETNET_HEALTH_PORT={port}",
                            )
                        )
    return problems


# --- references, secrets, namespaces -------------------------------------------------------
def check_references(r: Render) -> list[Problem]:
    problems = []
    configmaps = {d["metadata"]["name"] for d in r.kind("ConfigMap")}
    accounts = {d["metadata"]["name"] for d in r.kind("ServiceAccount")}
    templates = [(d, pod_labels(d)) for d in r.docs if d["kind"] in WORKLOAD_KINDS]
    for d, _ in templates:
        for pod in pod_specs(d):
            sa = pod.get("serviceAccountName")
            if sa and sa not in accounts:
                problems.append(Problem(name_of(d), f"serviceAccountName {sa} does not exist"))
            for c in containers(pod):
                for src in c.get("envFrom", []):
                    ref = src.get("configMapRef", {}).get("name")
                    if ref and ref not in configmaps:
                        problems.append(
                            Problem(name_of(d), f"{c['name']}: ConfigMap {ref} does not exist")
                        )
            for vol in pod.get("volumes", []):
                ref = vol.get("configMap", {}).get("name")
                if ref and ref not in configmaps:
                    problems.append(
                        Problem(name_of(d), f"volume {vol['name']}: ConfigMap {ref} does not exist")
                    )
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for d in r.kind(kind):
            ref = d["spec"]["scaleTargetRef"]
            if r.get(ref.get("kind", "Deployment"), ref["name"]) is None:
                problems.append(
                    Problem(
                        name_of(d),
                        f"scaleTargetRef {ref.get('kind', 'Deployment')}/"
                        f"{ref['name']} does not exist",
                    )
                )
    selectors: list[tuple[Doc, dict[str, Any]]] = [
        (d, {"matchLabels": d["spec"].get("selector", {})}) for d in r.kind("Service")
    ]
    selectors += [(d, d["spec"]["selector"]) for d in r.kind("PodDisruptionBudget")]
    for d, sel in selectors:
        if not sel.get("matchLabels") and not sel.get("matchExpressions"):
            continue
        if not any(_matches(sel, labels) for _, labels in templates):
            problems.append(Problem(name_of(d), f"its selector {sel} matches no pod template"))
    return problems


def external_secrets(r: Render) -> set[str]:
    """Secrets the deployment needs that are created outside the repository."""
    names: set[str] = set()
    for d in r.docs:
        for pod in pod_specs(d):
            for vol in pod.get("volumes", []):
                if "secret" in vol:
                    names.add(vol["secret"]["secretName"])
                for src in vol.get("projected", {}).get("sources", []):
                    if "secret" in src:
                        names.add(src["secret"]["name"])
            for c in containers(pod):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        names.add(ref["name"])
        if d["kind"] == "Cluster":
            creds = (
                d["spec"].get("backup", {}).get("barmanObjectStore", {}).get("s3Credentials", {})
            )
            names.update(v["name"] for v in creds.values() if isinstance(v, dict))
        if d["kind"] == "Ingress":
            names.update(t["secretName"] for t in d["spec"].get("tls", []) if "secretName" in t)
    return names


def check_no_secrets(r: Render) -> list[Problem]:
    return [
        Problem(
            name_of(d),
            "Secrets are never part of the repository: create it with kubectl "
            '(k8s/README.md, "Secrets") and remove it from the overlay',
        )
        for d in r.kind("Secret")
    ]


def check_namespaces(r: Render) -> list[Problem]:
    declared = {d["metadata"]["name"] for d in r.kind("Namespace")}
    problems = []
    for d in r.docs:
        if d["kind"] in CLUSTER_SCOPED:
            continue
        ns = d["metadata"].get("namespace")
        if not ns:
            problems.append(Problem(name_of(d), "no namespace: set `namespace:` in the overlay"))
        elif ns not in declared:
            problems.append(Problem(name_of(d), f"namespace {ns} is not declared in the overlay"))
    return problems


RULES: list[Callable[[Render], list[Problem]]] = [
    check_settings,
    check_topics,
    check_replication,
    check_processor_ceiling,
    check_gateways,
    check_health_probes,
    check_references,
    check_no_secrets,
    check_namespaces,
]


def check_invariants(docs: list[Doc]) -> list[Problem]:
    r = Render(docs)
    return [p for rule in RULES for p in rule(r)]
