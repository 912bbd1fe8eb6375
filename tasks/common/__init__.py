"""What several stages share, written once: the stage contract (stage.py), file I/O and hashes (io.py),
code and library versions for keys (versions.py), the Prefect wrapper (prefect.py), model loading
(models.py), batched generation (generation.py), the teacher backends (teacher/), row filters
(filtering.py) and MLflow tracking (tracking.py)."""
