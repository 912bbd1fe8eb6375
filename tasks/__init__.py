"""Pipeline stages: one module per stage, each a pure function on files plus a thin Prefect task."""
