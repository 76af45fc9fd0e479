"""`python -m core …`: the headless face of the engine. Argument parsing only; every
command is a call into the modules that do the work.

Bad input ends with one line on stderr naming the file, row and column, and exit
status 2 — never a traceback (`--debug` shows one for bug reports).
"""

from __future__ import annotations

import sys

from core.cli.commands import (
    EXIT_BAD_INPUT,
    cmd_api,
    cmd_demo,
    cmd_embed,
    cmd_evaluate,
    cmd_explain,
    cmd_export,
    cmd_import,
    cmd_job_worker,
    cmd_models,
    cmd_predict,
    cmd_serve,
    cmd_suspects,
    cmd_train,
    cmd_users,
)
from core.cli.parser import build_parser
from core.common.errors import InputError, one_line
from core.studio.store import StoreWriteError, out_of_space

COMMANDS = {"train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate, "demo": cmd_demo,
            "explain": cmd_explain, "serve": cmd_serve, "job-worker": cmd_job_worker,
            "suspects": cmd_suspects, "import": cmd_import, "export": cmd_export, "users": cmd_users,
            "api": cmd_api, "models": cmd_models, "embed": cmd_embed}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        if args.debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, StoreWriteError) as exc:
        if args.debug:
            raise
        if out_of_space(exc):
            print(f"error: the disk is full (or a file size limit was reached): {one_line(exc)}; the step "
                  "that failed saved nothing", file=sys.stderr)
        else:
            print(f"error: {type(exc).__name__}: {one_line(exc)} (run with --debug for details)", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, and a way to see more
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {one_line(exc)} (run with --debug for details)",
              file=sys.stderr)
        return 1
