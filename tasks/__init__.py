"""Pipeline stages: one package per stage (run / SPEC in its __init__.py, the work in modules
beside it) and tasks/common for what several stages share."""
