"""`finetune` command line: `finetune run --config PATH [--only STAGE...] [--force STAGE...]`.

Bad input (missing or invalid config, unknown stage name, --only without cached inputs) exits with code 2
and a message naming the file and key, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys

from flows.runner import STAGES, check_stage_names, format_table
from pipeline_config import ConfigError, load_config
from tasks.stage import MissingInputError

USAGE_ERROR = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the finetune flow")
    run.add_argument("--config", required=True, help="YAML profile, e.g. pipeline_config/offline.yaml")
    run.add_argument(
        "--only", nargs="+", default=[], metavar="STAGE", help=f"run only these ({', '.join(STAGES)})"
    )
    run.add_argument(
        "--force", nargs="+", default=[], metavar="STAGE", help="re-run these and all after them"
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    check = sub.add_parser("validate", help="validate config files and exit")
    check.add_argument("configs", nargs="+")
    return parser.parse_args(argv)


def fail(message: str) -> int:
    print(f"finetune: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "validate":
            for path in args.configs:
                load_config(path)
                print(f"ok: {path}")
            return 0
        load_config(args.config)  # validate before Prefect starts anything: bad input writes nothing
        check_stage_names(args.only, "--only")
        check_stage_names(args.force, "--force")
    except (ConfigError, ValueError) as exc:
        return fail(str(exc))

    from flows.finetune import finetune  # imports Prefect, torch, ...: only once the input is known good

    try:
        summary = finetune(config_path=args.config, only=args.only or None, force=args.force or None)
    except MissingInputError as exc:
        return fail(str(exc))
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    if not args.json:
        mlflow = summary["mlflow"]
        if "version" in mlflow:
            print(
                f"\nmodel {mlflow['model_name']} v{mlflow['version']} aliases={','.join(mlflow['aliases'])}"
            )
        print(f"summary: {summary['summary_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
