"""What each command does: a call into the floors below, the result printed (JSON or CSV on
stdout, progress on stderr)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from core.common.errors import InputError

EXIT_BAD_INPUT = 2


def _load(args, *, require_labels: bool):
    from core.data.catalogue import load_catalogue

    return load_catalogue(
        args.data, text_cols=args.text_cols, label_col=getattr(args, "label_col", None),
        label_level=getattr(args, "label_level", None), label_depth=getattr(args, "label_depth", None),
        image_col=args.image_col, image_dir=args.image_dir,
        encoding=args.encoding, require_labels=require_labels, progress=not args.quiet,
    )


def _report(catalogue, quiet: bool) -> None:
    if not quiet:
        for line in catalogue.report.summary_lines():
            print(line, file=sys.stderr)


def _train_config(args, seed: int):
    from core.training.trainer import TrainConfig

    if not 0 <= args.val_fraction < 0.9:
        raise InputError(f"--val-fraction must be in [0, 0.9), got {args.val_fraction}")
    if args.folds is None:
        from core.studio.retrain import RETRAIN_DEFAULTS

        args.folds = RETRAIN_DEFAULTS["folds"] if args.from_store else 5
    if args.folds < 2:
        raise InputError(f"--folds must be 2 or more, got {args.folds}")
    return TrainConfig(text_arch=args.text_arch, backbone=args.backbone,
                       weights=None if args.no_pretrained else "imagenet", folds=args.folds,
                       val_fraction=args.val_fraction, seed=seed, text_epochs=args.epochs, finetune=args.finetune)


def _summary(metrics: dict) -> dict:
    """n / accuracy / macro-F1 per model; a tree model adds them per level (fused)."""
    out = {k: {m: v.get(m) for m in ("n", "accuracy", "macro_f1")} for k, v in metrics.items()
           if k in ("fused", "text", "image")}
    levels = ((metrics.get("tree") or {}).get("fused") or {}).get("levels")
    if levels:
        out["levels"] = {k: {m: v.get(m) for m in ("n", "accuracy", "macro_f1")} for k, v in levels.items()}
    return out


def _seed_summary(runs: list[dict]) -> dict:
    """mean ± std of each validation metric over the seeds' runs."""
    import numpy as np

    out = {}
    for part in ("fused", "text", "image"):
        for metric in ("accuracy", "macro_f1"):
            values = [r[part][metric] for r in runs if r.get(part, {}).get(metric) is not None]
            if values:
                out.setdefault(part, {})[metric] = {"mean": round(float(np.mean(values)), 6),
                                                    "std": round(float(np.std(values)), 6), "n": len(values)}
    return out


def cmd_train(args) -> int:
    from core.training.trainer import Trainer

    if args.seeds < 1:
        raise InputError(f"--seeds must be 1 or more, got {args.seeds}")
    if args.from_store:
        return _train_from_store(args)
    missing = [flag for flag, value in (("--data", args.data), ("--text-cols", args.text_cols),
                                        ("--label-col", args.label_col), ("--out", args.out)) if value is None]
    if missing:
        raise InputError(f"train needs {', '.join(missing)} (or --from-store)")
    catalogue = _load(args, require_labels=True)
    _report(catalogue, args.quiet)
    runs, first = [], None
    for k in range(args.seeds):
        classifier = Trainer(_train_config(args, args.seed + k), verbose=not args.quiet).fit(catalogue)
        runs.append(classifier.metadata.metrics["validation"])
        if first is None:
            first = classifier
            path = classifier.save(args.out)  # saved at once: a later seed failing keeps it
    summary = {"model": str(path), "version": first.version, "train_seconds": first.metadata.train_seconds,
               "validation": _summary(runs[0])}
    if args.seeds > 1:
        summary["seeds"] = {"seeds": list(range(args.seed, args.seed + args.seeds)), **_seed_summary(runs)}
    print(json.dumps(summary, indent=2))
    return 0


def _train_from_store(args) -> int:
    from core.studio.auth import User
    from core.studio.jobs import get_job
    from core.studio.retrain import start_training
    from core.studio.store import Store

    if args.data is not None:
        raise InputError("--from-store trains on the database; leave out --data")
    store = Store()
    runs = []
    for k in range(args.seeds):
        job_id = start_training(store, User.system("cli"), _train_config(args, args.seed + k), background=False,
                                out=args.out if k == 0 else None)
        runs.append(get_job(store, job_id).result)
    first = runs[0]
    summary = {"model": first["path"], "version": first["version"], "registered": True,
               "trained_from": first.get("trained_from"),
               "validation": _summary(first["metrics"]["validation"]),
               "eval_slice": _summary(first["metrics"].get("eval_slice") or {})}
    if args.seeds > 1:
        summary["seeds"] = {"seeds": list(range(args.seed, args.seed + args.seeds)),
                            **_seed_summary([r["metrics"]["validation"] for r in runs])}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_suspects(args) -> int:
    from core.training.suspects import find_suspects, ranked_frame

    catalogue = _load(args, require_labels=True)
    _report(catalogue, args.quiet)
    result = find_suspects(catalogue, folds=args.folds, seed=args.seed, backbone=args.backbone,
                           weights=None if args.no_pretrained else "imagenet",
                           on_progress=None if args.quiet else lambda f, m: print(f"{m}…", file=sys.stderr))
    frame = ranked_frame(catalogue, result)
    _atomic_write_csv(frame, args.out)
    if not args.quiet:
        print(f"wrote {len(frame)} rows to {args.out}: {int(result.flagged.sum())} suspected mislabels "
              f"(of {len(result.rows)} scored)", file=sys.stderr)
    return 0


def _atomic_write_csv(frame, out: Path) -> None:
    """Write next to the target and rename, so a failure never leaves half a file
    (or destroys the previous one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            frame.to_csv(fh, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_predict(args) -> int:
    from core.data.shards import list_shards
    from core.inference.engines import run
    from core.inference.rows import PredictJob
    from core.models.bundle import require_bundle

    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        raise InputError(f"--min-confidence must be between 0 and 1, got {args.min_confidence}")
    require_bundle(args.model)
    shards = list_shards(args.data)
    job = PredictJob(text_cols=args.text_cols, image_col=args.image_col,
                     image_dir=str(args.image_dir) if args.image_dir else None, min_confidence=args.min_confidence,
                     probabilities=args.probabilities, encoding=args.encoding)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    summary = run(shards, job, args.model, args.out, engine=args.engine, workers=args.workers,
                  batch_size=args.batch_size, part_format=args.out_format, progress=not args.quiet, log=say)
    for path, report in summary.reports:
        for line in report.summary_lines():
            say(line)
        unusable = report.unusable_rows
        if unusable:
            shown = ", ".join(map(str, unusable[:10])) + (" …" if len(unusable) > 10 else "")
            where = f"{path.name}: " if len(summary.reports) > 1 else ""
            print(f"warning: {where}{len(unusable)} row(s) had neither text nor a usable image and were left "
                  f"unpredicted (rows {shown})", file=sys.stderr)
    say(f"wrote {summary.rows} predictions to {args.out}"
        + (f" ({summary.parts} parts)" if args.out.suffix.lower() != ".csv" else ""))
    return 0


def cmd_embed(args) -> int:
    from core.data.shards import list_shards
    from core.inference.embed import EmbedJob
    from core.inference.engines import run_embed

    shards = list_shards(args.data)
    job = EmbedJob(image_col=args.image_col, image_dir=str(args.image_dir) if args.image_dir else None,
                   backbone=args.backbone, pretrained=not args.no_pretrained, encoding=args.encoding)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    summary = run_embed(shards, job, engine=args.engine, workers=args.workers, batch_size=args.batch_size,
                        progress=not args.quiet, log=say)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    for m in summary["missing_rows"][:3]:
        say(f"  {m['file']}, row {m['row']}: {m['reason']}")
    print(json.dumps(summary, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from core.models.bundle import require_bundle
    from core.models.classifier import Classifier
    from core.training.trainer import evaluation_metrics

    require_bundle(args.model)
    catalogue = _load(args, require_labels=False)
    _report(catalogue, args.quiet)
    classifier = Classifier.load(args.model)
    labelled = [i for i, l in enumerate(catalogue.labels) if l is not None]
    if not labelled:
        raise InputError(f"{args.data.name}: no row has a label in column '{args.label_col}'")
    result = classifier.predict_batch([catalogue.texts[i] for i in labelled],
                                      [catalogue.image_paths[i] for i in labelled], progress=not args.quiet)
    y_true = [catalogue.labels[i] for i in labelled]
    metrics = evaluation_metrics(result.labels, y_true, result.fused, result.text, result.has_text,
                                 result.image, result.has_image)
    unknown = sorted(set(y_true) - set(result.labels))
    metrics["rows"].update({"unlabelled": len(catalogue) - len(labelled), "unknown_labels": unknown})
    if not classifier.tree.is_flat:
        from core.training.tree_metrics import batch_models, tree_report

        metrics["tree"] = tree_report(y_true, batch_models(result), valid_paths=classifier.tree.prefixes(),
                                      depth=classifier.tree.depth)
    metrics["model_version"] = classifier.version
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return 0


def cmd_import(args) -> int:
    from dataclasses import asdict

    from core.studio.auth import User
    from core.studio.labels import import_catalogue
    from core.studio.store import Store

    name = (args.name or args.data.stem).strip()
    if not name:
        raise InputError("--name must not be empty")
    catalogue = _load(args, require_labels=True)
    summary = import_catalogue(Store(), User.system("cli"), catalogue, name, id_col=args.id_col)
    _report(catalogue, args.quiet)  # after the import: bad input ends with its one error line
    print(json.dumps(asdict(summary), indent=2, ensure_ascii=False))
    if not args.quiet:
        print(f"{summary.source}: {summary.line()}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from core.studio.auth import User
    from core.studio.export import FORMATS, decision_log, labelled_dataset, write_table
    from core.studio.store import Store

    if args.out.suffix.lower() not in FORMATS:  # before the database is read
        raise InputError(f"{args.out.name}: unknown extension '{args.out.suffix}'; write a .csv or a .parquet file")
    user = User.system("cli")
    frame = decision_log(Store(), user) if args.decisions else labelled_dataset(Store(), user)
    path = write_table(frame, args.out)
    what = "decisions" if args.decisions else "products"
    print(json.dumps({"out": str(path), "rows": len(frame), "what": what}))
    if not args.quiet:
        print(f"wrote {len(frame)} {what} to {path}", file=sys.stderr)
    return 0


def _password_from_stdin() -> str:
    """The new password: the first line of stdin (typed at a hidden prompt on a terminal)."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != first:
            raise InputError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        raise InputError("give the new password on stdin (e.g. `read -s PW; printf '%s\\n' \"$PW\" | python -m core "
                         "users …`)")
    return password


def cmd_users(args) -> int:
    from core.studio.auth import User, create_user, reset_password
    from core.studio.store import Store

    store = Store()
    if args.users_command == "reset-password":
        user = reset_password(store, args.name, _password_from_stdin(), by=User.system("cli"))
        print(f"password of {user.username} ({user.role}) reset; all of their sessions ended", file=sys.stderr)
        return 0
    if args.users_command == "token":
        from core.studio.tokens import create_token

        token = create_token(store, User.system("cli"), args.name, args.label)
        print(f"API token for {args.name} (shown once; revoke it on the Users page):", file=sys.stderr)
        print(token, flush=True)
        return 0
    first = store.one("SELECT 1 AS x FROM users LIMIT 1") is None  # the first user needs no acting admin
    user = create_user(store, args.name, _password_from_stdin(), args.role, by=None if first else User.system("cli"),
                       must_change_password=args.must_change_password)
    print(f"added {user.username} ({user.role})", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    from core.studio.auth import User
    from core.studio.registry import add_model, get_model
    from core.studio.store import Store

    store = Store()
    version = add_model(store, User.system("cli"), args.model_dir, make_live=args.activate)
    row = get_model(store, version)
    print(f"{version} registered from {row.path}" + (" and live" if row.live else ""), flush=True)
    return 0


def cmd_api(args) -> int:
    from core.cli.api import command

    return command(args)


def cmd_demo(args) -> int:
    from core.studio.demo import ensure_demo_model

    path = ensure_demo_model(args.data_dir, force=args.force)
    print(f"demo model ready: {path}")
    return 0


def cmd_explain(args) -> int:
    from core.cli.explain import run

    return run(args)


def cmd_job_worker(args) -> int:
    from core.studio.jobs import run_worker

    return run_worker(args.job_id)


def cmd_serve(args) -> int:
    from core.cli.serve import command

    return command(args)
