"""Render an overlay with Debian's kubectl and validate every object against its schema.

* Rendering: ``kubectl kustomize <overlay>``. The kubectl is Debian 12's ``kubernetes-client``
  (1.20, embedding kustomize v2.0.3), which ``scripts/setup.sh`` links at
  ``.venv-tools/bin/kubectl``; ``KUBECTL`` overrides it.
* Core kinds: Kubernetes' own OpenAPI-derived JSON schemas for :data:`KUBERNETES_VERSION`,
  shipped by ``kubernetes-validate``, in strict mode (an unknown field is an error).
* Operator kinds (Strimzi, CloudNativePG, KEDA): meetnet's schemas in ``k8s/schemas/`` (a
  subset of each operator's CRD, written for the fields meetnet uses; see its README).
  A kind that neither knows is an error: nothing is left unchecked silently.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meetnet.settings import PROJECT_ROOT

K8S_DIR = PROJECT_ROOT / "k8s"
SCHEMA_DIR = K8S_DIR / "schemas"
TOOLS_BIN = PROJECT_ROOT / ".venv-tools" / "bin"
# The oldest Kubernetes the manifests are written for: native sidecars (restartPolicy Always
# init containers, Mosquitto's broker-auth) are on by default from 1.29.
KUBERNETES_VERSION = "1.30"
SCHEMA_ID_BASE = "https://meetnet.invalid/k8s/schemas/"


class CheckError(Exception):
    """The overlay cannot be rendered or checked at all (the message says why)."""


@dataclass(frozen=True)
class Problem:
    where: str  # "Kind/name", or the overlay for whole-render problems
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CheckError(
            f"{module} is missing: install the checks' dependencies with "
            "pip install -e '.[k8s]' (or run `make setup`)"
        ) from e


def kubectl() -> str:
    """Debian's kubectl: $KUBECTL, else the one `make setup` links, else kubectl on PATH."""
    for candidate in (os.environ.get("KUBECTL"), str(TOOLS_BIN / "kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("kubectl")
    if found:
        return found
    raise CheckError(
        "kubectl not found: run `make setup` (installs Debian's kubernetes-client and links it "
        f"at {TOOLS_BIN / 'kubectl'}), or set KUBECTL"
    )


def render(overlay: Path, kubectl_bin: str | None = None) -> str:
    """The overlay's manifests as kubectl kustomize prints them."""
    if not (overlay / "kustomization.yaml").is_file():
        raise CheckError(f"{overlay}: no kustomization.yaml")
    cmd = [kubectl_bin or kubectl(), "kustomize", str(overlay)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CheckError(f"{overlay}: cannot run {cmd[0]}: {e}") from e
    if out.returncode != 0:
        raise CheckError(f"{overlay}: kubectl kustomize failed: {out.stderr.strip()}")
    return out.stdout


def load(text: str) -> list[dict[str, Any]]:
    yaml = _need("yaml")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        raise CheckError(f"the rendered manifests are not YAML: {e}") from e
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise CheckError(f"a rendered document is not a Kubernetes object: {str(d)[:200]}")
    return docs


@functools.cache
def _operator_schemas() -> tuple[dict[tuple[str, str], Any], Any]:
    """{(apiVersion, kind): schema} from k8s/schemas, and a registry resolving their $refs."""
    yaml = _need("yaml")
    referencing = _need("referencing")
    from referencing.jsonschema import DRAFT202012

    schemas: dict[tuple[str, str], Any] = {}
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.yaml")):
        schema = yaml.safe_load(path.read_text())
        resources.append((SCHEMA_ID_BASE + path.name, DRAFT202012.create_resource(schema)))
        if path.name.startswith("_"):
            continue
        group, version, kind = path.stem.split("_")
        schemas[(f"{group}/{version}", kind)] = schema
    return schemas, referencing.Registry().with_resources(resources)


def validate_schemas(
    docs: list[dict[str, Any]], version: str = KUBERNETES_VERSION
) -> list[Problem]:
    jsonschema = _need("jsonschema")
    kv = _need("kubernetes_validate")
    schemas, registry = _operator_schemas()
    problems = []
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in schemas:
            validator = jsonschema.Draft202012Validator(schemas[key], registry=registry)
            for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                problems.append(Problem(name_of(doc), f"{_path(err.absolute_path)}: {err.message}"))
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            problems.append(
                Problem(
                    name_of(doc),
                    f"no schema for {doc['apiVersion']} {doc['kind']}: neither Kubernetes "
                    f"{version} has it nor k8s/schemas (add one there)",
                )
            )
        except kv.ValidationError as e:
            problems.append(Problem(name_of(doc), f"{_path(e.path)}: {e.message}"))
    return problems


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def checkov_bin() -> str | None:
    candidate = os.environ.get("CHECKOV") or str(TOOLS_BIN / "checkov")
    return candidate if os.access(candidate, os.X_OK) else shutil.which("checkov")


def run_checkov(
    files: list[Path], extra: list[str] | None = None, output: str = "cli"
) -> subprocess.CompletedProcess[str]:
    """checkov's Kubernetes (and Dockerfile) policies on rendered manifests, offline."""
    binary = checkov_bin()
    if binary is None:
        raise CheckError("checkov not found: run `make setup` (installs it into .venv-tools/)")
    cmd = [binary, "--quiet", "--compact", "--skip-download", "--output", output]
    for f in files:
        cmd += ["--file", str(f)]
    cmd += extra or []
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
