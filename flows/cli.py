"""`finetune` command line: `finetune run --config PATH [--only STAGE...] [--force STAGE...]`,
`finetune runs` (recent runs: stage statuses, durations, MLflow links), `finetune show STAGE` (a stage's
report and data path) and `finetune generate --config PATH [--model champion] "instruction"` with a
registered model (`--infill "prefix<FILL>suffix"`: the middle, from a model trained with FIM); given
several instructions it prints each answer under its instruction ("> instruction"), an empty one as
"(empty)"; MLflow's and the loaders' messages go to the workspace's logs/ unless --verbose.

Bad input (missing or invalid config, an unusable workspace, an unknown stage, --only without cached
inputs, --force outside --only, a base model that is not on this machine) exits with code 2 and one
message naming the file, key or stage, before Prefect or MLflow start: nothing is written.
A stage that fails exits 1 after the run's summary and MLflow status are recorded. SIGTERM ends the run
the same way and the process exits at once, without waiting on a temporary Prefect server.
"""

from __future__ import annotations

import os

# Before anything can import Prefect, which reads its settings once, at import. With analytics on, a run
# that starts its own temporary server while another run is active prints ~150 lines of sqlite "database
# is locked" from the telemetry service. setdefault: a user who set it either way keeps their choice.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path

from flows.quiet import library_output_to, log_path, stderr_to
from flows.runner import UsageError, check_stage_names
from flows.summary import format_footer, format_table
from pipeline_config import ConfigError, load_config
from tasks.common.io import check_workspace, workspace_location, workspace_path

USAGE_ERROR = 2


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so the run records its failure, then exit."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the finetune flow")
    run.add_argument("--config", required=True, help="YAML profile, e.g. pipeline_config/offline.yaml")
    # the stage names come from the DAG (flows/finetune.py), checked once it is imported: importing it
    # here would load every stage and Prefect before a bad config could be reported
    run.add_argument("--only", nargs="+", default=[], metavar="STAGE", help="run only these stages")
    run.add_argument(
        "--force", nargs="+", default=[], metavar="STAGE", help="re-run these and all after them"
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    run.add_argument("--verbose", action="store_true", help="show library warnings and progress bars too")
    runs = sub.add_parser(
        "runs", help="list recent runs in the workspace: stage statuses, how long each took, its MLflow run"
    )
    runs.add_argument("--config", default="pipeline_config/offline.yaml", help="names the workspace")
    runs.add_argument("-n", type=int, default=10, help="how many (newest first)")
    show = sub.add_parser("show", help="print a stage's report and the path of its data")
    show.add_argument("stage", help="a stage of the DAG in flows/finetune.py")
    show.add_argument("--config", default="pipeline_config/offline.yaml")
    check = sub.add_parser("validate", help="validate config files and exit")
    check.add_argument("configs", nargs="+")
    gen = sub.add_parser(
        "generate", help="answer an instruction with a registered model, formatted with its own template"
    )
    gen.add_argument("instruction", nargs="*", help="one or more instructions")
    gen.add_argument(
        "--infill", metavar="CODE", help='fill in code: "prefix<FILL>suffix" (a model trained with FIM)'
    )
    gen.add_argument("--config", default="pipeline_config/offline.yaml", help="names the registered model")
    gen.add_argument("--model", default="champion", help="champion, challenger, a version, or models:/...")
    gen.add_argument("--input", default="", help="the prompt's input block (a signature, some code)")
    gen.add_argument(
        "--messages",
        metavar="FILE",
        help='continue a conversation: a JSON list of {"role", "content"} turns ending with a user turn '
        "(- reads standard input)",
    )
    gen.add_argument("--max-new-tokens", type=int, default=None, help="default: as the evaluation ran it")
    gen.add_argument(
        "--verbose", action="store_true", help="show MLflow and loader messages (else: WORKSPACE/logs/)"
    )
    return parser.parse_args(argv)


def fail(message: str, code: int = USAGE_ERROR) -> int:
    print(f"finetune: error: {message}", file=sys.stderr)
    return code


def load_checked(path: str):
    cfg = load_config(path)
    try:
        check_workspace(workspace_location(cfg))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc} (set `workspace:` or FINETUNE_WORKSPACE)") from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "validate":
            for path in args.configs:
                load_checked(path)
                print(f"ok: {path}")
            return 0
        cfg = load_checked(args.config)
        if args.command == "generate":
            return generate(cfg, args)
        if args.command == "runs":
            from flows.inspect import list_runs

            print(list_runs(workspace_location(cfg), args.n))
            return 0
        if args.command == "show":
            from flows.finetune import STAGES
            from flows.inspect import show_stage

            check_stage_names([args.stage], "show", STAGES)
            try:
                print(show_stage(cfg, args.config, args.stage))
            except LookupError as exc:
                return fail(str(exc), 1)
            return 0
        # A busy 2-core machine (another run, a test suite) can take longer than Prefect's default 20 s
        # to start the temporary server a run without PREFECT_API_URL uses; waiting beats failing.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        from flows.finetune import DAG, finetune  # imports Prefect: only once the config is known good
        from flows.runner import plan
        from tasks.base_model.sources import ModelNotFoundError
        from tasks.dataset_sources.read import DatasetUnavailable

        try:
            plan(cfg, DAG, args.only, args.force, args.config)  # keys, --only/--force, the model, the data
        except (ModelNotFoundError, DatasetUnavailable) as exc:
            raise UsageError(str(exc)) from None
    except (ConfigError, UsageError) as exc:
        return fail(str(exc))

    signal.signal(signal.SIGTERM, _terminate)
    quiet = contextlib.nullcontext(None) if args.verbose else library_output_to(log_path(workspace_path(cfg)))
    try:
        with quiet as log:
            summary = finetune(config_path=args.config, only=args.only or None, force=args.force or None)
    except Terminated:
        _exit_now(fail("terminated (SIGTERM); the run is recorded as failed", 128 + signal.SIGTERM))
    except Exception as exc:  # the stage's traceback is in the log above; end with one line that names it
        return fail(f"{type(exc).__name__}: {exc}", 1)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{format_table(summary)}\n\n{format_footer(summary, log)}")
    return 0


def generate(cfg, args: argparse.Namespace) -> int:
    """Load the model from the project's tracking store (MLFLOW_TRACKING_URI, else mlflow/mlflow.db)."""
    from flows import tracking
    from tasks.registration.registry import RegistryUnavailable, reachable_registry, why_no_champion
    from tasks.registration.serving import load_registered, model_uri

    if sum((args.infill is not None, bool(args.instruction), args.messages is not None)) != 1:
        return fail('generate takes instructions, --infill "prefix<FILL>suffix" or --messages FILE (one)')
    if args.messages is not None:
        try:
            messages = read_messages(args.messages)
        except ValueError as exc:
            return fail(str(exc))
    if args.infill is not None:
        from tasks.evaluation.completion import infill_case

        try:
            case = infill_case(args.infill)
        except ValueError as exc:
            return fail(str(exc))
    # MLflow's event lines and the loaders' progress bars to the log file: stdout is the answers
    quiet = contextlib.nullcontext() if args.verbose else stderr_to(log_path(workspace_path(cfg)))
    try:
        uri = model_uri(args.model, cfg.register.model_name)
        with quiet:
            tracking.client()  # points MLflow at the project's store
            with reachable_registry(tracking.tracking_uri()):
                model = load_registered(uri)
    except RegistryUnavailable as exc:
        return fail(str(exc), 1)
    except Exception as exc:  # no such model, version or alias: MLflow says which
        hint = why_no_champion(tracking.client(), cfg.register.model_name) if args.model == "champion" else ""
        return fail(
            f"cannot load {args.model!r} from {tracking.tracking_uri()}: {str(exc).rstrip('.')}{hint}", 1
        )
    if args.infill is not None:
        return infill(model, case, args)
    if args.messages is not None:
        try:
            prompts = [model.format_conversation(messages)]
        except ValueError as exc:
            return fail(str(exc))
    else:
        prompts = [model.format(text, args.input) for text in args.instruction]
    answers = [c.text for c in model.complete(prompts, args.max_new_tokens)]
    print(labelled(args.instruction, answers) if len(args.instruction) > 1 else shown(answers[0]))
    return 0


def shown(text: str) -> str:
    """An answer as printed: an empty generation says so rather than printing a blank line."""
    return text.strip() or "(empty)"


def labelled(instructions: list[str], answers: list[str]) -> str:
    """Each answer under its instruction (quoted with "> ", as in an e-mail reply), a blank line between."""
    return "\n\n".join(
        "\n".join(f"> {line}" for line in instruction.splitlines() or [""]) + f"\n{shown(answer)}"
        for instruction, answer in zip(instructions, answers, strict=True)
    )


def read_messages(source: str) -> list[dict]:
    """--messages: the turns of a conversation to continue, its last a user turn."""
    from tasks.common.chat import USER, conversation_problem

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        messages = json.loads(text)
    except OSError as exc:
        raise ValueError(f"--messages {source}: cannot read it: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--messages {source}: not JSON: {exc}") from None
    if not (isinstance(messages, list) and messages and isinstance(messages[-1], dict)):
        raise ValueError(f"--messages {source}: a JSON list of turns is expected")
    if messages[-1].get("role") != USER:
        raise ValueError(f"--messages {source}: the last turn is the question to answer: a user turn")
    if problem := conversation_problem([*messages, {"role": "assistant", "content": "?"}]):
        raise ValueError(f"--messages {source}: the conversation {problem}")
    return messages


def infill(model, case: dict, args: argparse.Namespace) -> int:
    """The PSM prompt as the tokenize stage trains FIM (no instruction template); prints the middle."""
    from tasks.evaluation.completion import complete, supports_fim
    from tasks.tokenization.fim import FIM_TOKENS

    if not supports_fim(model.tokenizer):
        return fail(
            f"--infill: model {args.model!r} was not trained with FIM (its tokenizer lacks "
            f"{', '.join(FIM_TOKENS)}); train one with tokenize.fim_rate > 0"
        )
    budget = args.max_new_tokens or model.generation["max_new_tokens"]
    middle = complete(model.model, model.tokenizer, [case], 1, budget)[0].text
    print(middle if middle.strip() else "(empty)")
    return 0


def _terminate(signum, frame):
    raise Terminated()


def _exit_now(code: int) -> None:
    """Stop the temporary Prefect server this process started, then skip interpreter shutdown, whose
    atexit hooks would otherwise wait minutes on services the signal has already broken."""
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()  # terminate, then kill after 5 s; an orphaned server would keep the port and pipes
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
