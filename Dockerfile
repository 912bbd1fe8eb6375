# The project image for Prefect Docker and Kubernetes work pools: the repo, its virtual environment and the
# offline default model, so a run needs no network. Build: docker build -t finetune-pipeline:latest .
# GPU images: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t ... .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# make: the set-up; util-linux: unshare, which the sandbox isolates generated code with
RUN apt-get update && apt-get install -y --no-install-recommends make util-linux git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/finetune
COPY . .
RUN make setup PY=python3 TORCH_INDEX=$TORCH_INDEX && rm -rf /root/.cache/pip

# deployment.yaml's pull step runs the flow from this folder; the workspace and the MLflow store should be
# volumes (or, with MLFLOW_TRACKING_URI, a tracking server) so that stages stay cached between runs
ENV PATH=/opt/finetune/.venv/bin:$PATH \
    FINETUNE_REPO_DIR=/opt/finetune \
    FINETUNE_WORKSPACE=/data/workspace \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
VOLUME ["/data"]
CMD ["finetune", "run", "--config", "pipeline_config/offline.yaml"]
