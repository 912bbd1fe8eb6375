# The project image for Prefect Docker and Kubernetes work pools: the repo, its virtual environment and the
# offline default model, so a run needs no network. Build: docker build -t finetune-pipeline:latest .
# GPU images: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t ... .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# make: the set-up; util-linux: unshare, which the sandbox isolates generated code with
RUN apt-get update && apt-get install -y --no-install-recommends make util-linux git \
    && rm -rf /var/lib/apt/lists/*
# The pipeline runs as an ordinary user: its sandbox (tasks/common/sandbox.py) then uses the userns backend,
# an unprivileged user namespace. What the container needs for that and nothing more (docs/scaling.md):
# a seccomp and an AppArmor profile that allow unshare(CLONE_NEWUSER) and mount inside it -- not
# --privileged, no added capability.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/finetune finetune \
    && mkdir -p /data/workspace /data/mlflow && chown -R 10001:10001 /data

WORKDIR /opt/finetune
COPY . .
RUN make setup PY=python3 TORCH_INDEX=$TORCH_INDEX && rm -rf /root/.cache/pip

# deployment.yaml's pull step runs the flow from this folder; the workspace and the MLflow store should be
# volumes (or, with MLFLOW_TRACKING_URI, a tracking server) so that stages stay cached between runs
ENV PATH=/opt/finetune/.venv/bin:$PATH \
    FINETUNE_REPO_DIR=/opt/finetune \
    FINETUNE_WORKSPACE=/data/workspace \
    MLFLOW_TRACKING_URI=sqlite:////data/mlflow/mlflow.db FINETUNE_MLFLOW_ARTIFACTS=file:///data/mlflow/artifacts \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
VOLUME ["/data"]
USER 10001:10001
CMD ["finetune", "run", "--config", "pipeline_config/offline.yaml"]
