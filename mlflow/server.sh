#!/usr/bin/env bash
# Serve the local store: UI + REST API on http://127.0.0.1:${PORT:-5000}. Usage: mlflow/server.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# MLflow 3.17 also starts seven huey job consumers (~180 MB each) for its job queue; this pipeline uses none.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec "${MLFLOW_BIN:-$here/../.venv/bin/mlflow}" server \
  --backend-store-uri "sqlite:///$here/mlflow.db" \
  --default-artifact-root "file://$here/artifacts" \
  --host 127.0.0.1 --port "${PORT:-5000}"
