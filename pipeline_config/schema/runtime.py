"""`executor` and `sandbox`: how the stages run, not what they compute (in no stage key)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline_config.schema.base import Section, one_of
from tasks.common.sandbox import CHOICES as SANDBOX_CHOICES


class ExecutorConfig(Section):
    """Where the data stages' per-row work runs: scrape's file parsing, clean's per-row phase, synthesis
    verification (tasks/common/parallel.py). In no stage key: every executor gives the same output."""

    backend: Literal["local", "dask"] = "local"  # local: this machine (clean's process pool); dask: a cluster
    # dask: a running scheduler ("tcp://host:8786"); None: the flow's prefect-dask DaskTaskRunner cluster
    # if it has one, else a LocalCluster of n_workers processes started for the stage
    address: str | None = None
    n_workers: int = Field(2, ge=1)  # the LocalCluster's worker processes (one thread each)

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ExecutorConfig:
        if self.address is not None and self.backend != "dask":
            raise ValueError("executor.address is used only with executor.backend: dask")
        return self


class SandboxConfig(Section):
    """How generated code is contained when synthesize verifies it and evaluate runs pass@k
    (tasks/common/sandbox.py): auto takes the first of root, userns this machine can run; none runs it
    unisolated, logged loudly and named in the reports and on the registered model. In no stage key: the
    backends give code that does not attack them the same verdicts, and the reports say which one ran."""

    backend: str = "auto"  # tasks/common/sandbox.py CHOICES

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        return one_of(value, SANDBOX_CHOICES, "sandbox.backend", "a sandbox backend")
