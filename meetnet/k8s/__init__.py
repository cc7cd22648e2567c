"""``meetnet k8s check``: render the Kustomize overlays under ``k8s/`` and check them offline.

Three steps per overlay, each failing with a message that says what to change:

1. render with Debian's ``kubectl kustomize`` (a bad patch fails here);
2. validate every object against its schema (:mod:`meetnet.k8s.render`);
3. check the platform's invariants (:mod:`meetnet.k8s.rules`), e.g. that the processors'
   autoscaling ceiling does not exceed the readings topic's partition count.

The static security scan (checkov) is separate: :func:`meetnet.k8s.render.run_checkov`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meetnet.k8s.render import (
    K8S_DIR,
    KUBERNETES_VERSION,
    CheckError,
    Problem,
    load,
    render,
    validate_schemas,
)
from meetnet.k8s.rules import Render, check_invariants, external_secrets

__all__ = ["KUBERNETES_VERSION", "CheckError", "Problem", "Result", "check", "overlays"]


@dataclass
class Result:
    overlay: Path
    manifests: str = ""
    docs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)  # to be created outside the repository

    @property
    def ok(self) -> bool:
        return not self.problems


def overlays() -> list[Path]:
    return sorted(p.parent for p in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))


def check(
    overlay: Path, version: str = KUBERNETES_VERSION, kubectl_bin: str | None = None
) -> Result:
    """Render and check one overlay; a render that fails is one problem, not an exception."""
    result = Result(overlay)
    try:
        result.manifests = render(overlay, kubectl_bin)
        result.docs = load(result.manifests)
    except CheckError as e:
        result.problems.append(Problem(str(overlay), str(e).removeprefix(f"{overlay}: ")))
        return result
    result.problems += validate_schemas(result.docs, version)
    result.problems += check_invariants(result.docs)
    result.problems = list(dict.fromkeys(result.problems))  # two schema paths, one mistake
    result.secrets = external_secrets(Render(result.docs))
    return result
