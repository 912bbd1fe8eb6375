"""ops/k8s/job-template.json, the Kubernetes work pool's base job template, checked without a cluster: it
passes the validation `prefect work-pool create` applies, uses every variable it declares, and Prefect's
own templating renders it into the Job that docs/scaling.md describes."""

from __future__ import annotations

import asyncio
import json
import re

from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.templating import find_placeholders
from prefect.workers.base import BaseJobConfiguration

from tests.conftest import REPO

TEMPLATE = json.loads((REPO / "ops" / "k8s" / "job-template.json").read_text())
VARIABLES = TEMPLATE["variables"]["properties"]


class KubernetesJob(BaseJobConfiguration):
    """The fields of prefect-kubernetes' job configuration (not installed here) that the template fills."""

    namespace: str = "default"
    job_manifest: dict
    job_watch_timeout_seconds: int | None = None
    pod_watch_timeout_seconds: int = 60
    stream_output: bool = True


def render(job_variables: dict) -> KubernetesJob:
    # client: no block or Prefect variable is referenced, so none is asked for (and no server started)
    config = KubernetesJob.from_template_and_values(TEMPLATE, job_variables, client=object())
    return asyncio.run(config)


def test_the_server_accepts_it_and_every_variable_is_used() -> None:
    validate_base_job_template(TEMPLATE)  # what `prefect work-pool create --base-job-template` runs
    used = {p.name for p in find_placeholders(json.dumps(TEMPLATE["job_configuration"]))}
    assert used == set(VARIABLES)  # an unreferenced variable would silently do nothing


def test_it_renders_the_job_the_docs_describe() -> None:
    job = render(
        {"image": "registry/finetune:1", "gpus": 2, "workspace_claim": "ws", "env": {"HF_TOKEN": "x"}}
    )
    spec = job.job_manifest["spec"]
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert spec["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"  # Prefect owns retries
    assert container["image"] == "registry/finetune:1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "workspace"]
    assert volumes["workspace"]["persistentVolumeClaim"] == {"claimName": "ws"}
    # the image's workspace (Dockerfile) is on the volume
    dockerfile = (REPO / "Dockerfile").read_text()
    workspace = re.search(r"FINETUNE_WORKSPACE=(\S+)", dockerfile)[1]
    assert job.env["FINETUNE_WORKSPACE"] == workspace and workspace.startswith(mount["mountPath"] + "/")
    # a deployment's env adds to the servers' addresses instead of replacing them
    assert job.env["PREFECT_API_URL"] == VARIABLES["prefect_api_url"]["default"]
    assert job.env["MLFLOW_TRACKING_URI"] == VARIABLES["mlflow_tracking_uri"]["default"]
    assert job.env["HF_TOKEN"] == "x"
    [default] = render({}).job_manifest["spec"]["template"]["spec"]["containers"]
    assert default["resources"]["requests"]["nvidia.com/gpu"] == 0  # CPU pods unless a deployment asks


def test_the_docs_name_only_variables_it_has() -> None:
    section = (REPO / "docs" / "scaling.md").read_text().split("\n## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    assert "--base-job-template ops/k8s/job-template.json" in section
    passed = set(re.findall(r"--job-variable (\w+)=", section))
    tabled = {
        name for row in re.findall(r"^\| (`.+?`) \|", section, re.M) for name in re.findall(r"`(\w+)`", row)
    }
    assert {"image", "workspace_claim", "gpus"} <= passed <= set(VARIABLES)
    assert {"image", "gpus", "prefect_api_url", "mlflow_tracking_uri", "env"} <= tabled <= set(VARIABLES)


def test_the_pod_runs_as_the_images_ordinary_user_with_only_what_the_sandbox_needs() -> None:
    # the userns sandbox backend needs user namespaces and mount inside them: seccomp and AppArmor off the
    # runtime defaults; it needs no root, no privileged container, no capability
    dockerfile = (REPO / "Dockerfile").read_text()
    uid, gid = map(int, re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M).groups())
    assert uid != 0 and f"--uid {uid}" in dockerfile and "util-linux" in dockerfile
    pod = render({}).job_manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    context = container["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (uid, gid, True)
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in context and "add" not in context["capabilities"]
    assert context["seccompProfile"] == {"type": "Unconfined"}
    assert context["appArmorProfile"] == {"type": "Unconfined"}
    assert pod["securityContext"] == {"fsGroup": gid}  # the workspace volume is writable by that user
    strict = render({"sandbox_seccomp": "RuntimeDefault"}).job_manifest["spec"]["template"]["spec"]
    assert strict["containers"][0]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # the image keeps everything it writes under /data (the volume), owned by that user
    assert f"chown -R {uid}:{gid} /data" in dockerfile
    assert "MLFLOW_TRACKING_URI=sqlite:////data/" in dockerfile and "FINETUNE_WORKSPACE=/data/" in dockerfile


def test_the_docs_give_docker_the_same_relaxations_and_no_broader_ones() -> None:
    section = (REPO / "docs" / "scaling.md").read_text().split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    for flag in ("seccomp=unconfined", "apparmor=unconfined"):
        assert section.count(flag) == 2  # the work pool's job variable and the docker run line
    assert "--privileged" not in section and "--cap-add" not in section
