#!/usr/bin/env bash
# Serve the local store: UI + REST API on http://127.0.0.1:${PORT:-5000}. Usage: make tracking-server
# (or mlflow/server.sh). MLFLOW_STORE=<dir> serves another folder's mlflow.db and artifacts/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
store="${MLFLOW_STORE:-$here}"
# MLflow 3.17 also starts seven huey job consumers (~180 MB each) for its job queue; this pipeline uses none.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
# Also four uvicorn workers (~250 MB each) by default: one serves one user (MLFLOW_WORKERS=... for more).
exec "${MLFLOW_BIN:-$here/../.venv/bin/mlflow}" server \
  --backend-store-uri "sqlite:///$store/mlflow.db" \
  --default-artifact-root "file://$store/artifacts" \
  --host 127.0.0.1 --port "${PORT:-5000}" --workers "${MLFLOW_WORKERS:-1}"
