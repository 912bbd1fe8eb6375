"""What several stages share, written once: the stage contract (stage.py; its publication on a
local workspace in publish.py), file I/O and hashes (io.py), code and library versions for keys (versions.py),
the run logger and the flow's Dask cluster (runtime.py), model loading (models.py), batched generation
(generation.py), the teacher backends (teacher/), row filters (filtering.py), the MLflow store
(mlflow_store.py) and the sandbox (sandbox.py). No Prefect task and no MLflow
run bookkeeping: those are orchestration, in flows/ (stage_tasks.py, tracking.py), and in no stage key."""
