"""Prefect flows: the `finetune` DAG (finetune.py), its stage runner (runner.py) and the CLI (cli.py)."""
