"""The command line's grammar: one small function per command adds its flags (the flags
and their meaning are a contract: other programs drive them)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cols(value: str) -> list[str]:
    cols = [c.strip() for c in value.split(",") if c.strip()]
    if not cols:
        raise argparse.ArgumentTypeError("give at least one column name")
    return cols


def _add_mapping(p: argparse.ArgumentParser, *, label: bool | None, required: bool = True,
                 data_help: str = "catalogue CSV") -> None:
    """The CSV mapping flags shared by train, predict, evaluate and suspects."""
    p.add_argument("--data", required=required, type=Path, help=data_help)
    p.add_argument("--text-cols", required=required, type=_cols, metavar="A[,B…]",
                   help="text columns, joined in this order")
    if label is not None:
        p.add_argument("--label-col", required=label and required, metavar="L[,L2…]",
                       help='label column: class names, or category paths like ["A >> B >> C"] (the tree is '
                            'learned), or several columns, one per level from the top')
        p.add_argument("--label-level", type=int, metavar="N",
                       help="a flat classifier on level N (1 = top) of the category tree")
        p.add_argument("--label-depth", type=int, metavar="N",
                       help="learn the category tree down to level N (default: its full depth)")
    p.add_argument("--image-col", metavar="I", help="column with image file names, paths or URLs")
    p.add_argument("--image-dir", type=Path, metavar="D", help="folder that relative image names are in")
    p.add_argument("--encoding", default="utf-8", help="CSV text encoding (default utf-8)")


# Commands a person runs; the others (job-worker: a background job's own process) work but are
# not listed (argparse would list a help=SUPPRESS one as "==SUPPRESS==").
HIDDEN_COMMANDS = frozenset({"job-worker"})


def build_parser() -> argparse.ArgumentParser:
    from core.cli.api import add_parser as add_api_parser
    from core.cli.explain import add_parser as add_explain_parser
    from core.cli.serve import add_parser as add_serve_parser

    parser = argparse.ArgumentParser(prog="python -m core", description="Catalog Studio engine")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train_parser, _add_predict_parser, _add_embed_parser, _add_evaluate_parser, _add_suspects_parser,
                _add_demo_parser, _add_import_parser, _add_export_parser, add_explain_parser,
                _add_job_worker_parser, add_serve_parser, add_api_parser, _add_users_parser, _add_models_parser):
        add(sub)
    sub.metavar = "{" + ",".join(name for name in sub.choices if name not in HIDDEN_COMMANDS) + "}"
    return parser


def _add_backbone(p: argparse.ArgumentParser) -> None:
    from core.models.options import BACKBONE_NAMES, DEFAULT_BACKBONE

    p.add_argument("--backbone", choices=BACKBONE_NAMES, default=DEFAULT_BACKBONE, metavar="NAME",
                   help=f"image backbone: {', '.join(BACKBONE_NAMES)} (default {DEFAULT_BACKBONE})")


def _add_train_parser(sub) -> None:
    from core.models.options import DEFAULT_TEXT_ARCH, TEXT_ARCHS

    p = sub.add_parser("train", help="train a model bundle from a labelled catalogue, or from the app's database")
    _add_mapping(p, label=True, required=False)
    p.add_argument("--from-store", action="store_true",
                   help="train on the database: imported catalogues + reviewers' decisions (latest wins); "
                        "the new version is registered (made live only if none is)")
    p.add_argument("--out", type=Path, metavar="MODEL_DIR", help="bundle folder (default with --from-store: "
                   "models/<version>)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train N times (seeds seed…seed+N-1) and report validation metrics as mean ± std; "
                        "the first seed's bundle is saved")
    p.add_argument("--text-arch", choices=TEXT_ARCHS, default=DEFAULT_TEXT_ARCH, metavar="ARCH",
                   help=f"text model: {', '.join(TEXT_ARCHS)} (default {DEFAULT_TEXT_ARCH})")
    _add_backbone(p)
    p.add_argument("--no-pretrained", action="store_true",
                   help="random backbone weights (offline tests of keras.applications backbones)")
    p.add_argument("--finetune", action="store_true",
                   help="also fine-tune the backbone's top block on the photos (slower, sometimes better)")
    p.add_argument("--folds", type=int, help="folds for the fusion's out-of-fold data (default 5; 3 with "
                   "--from-store, like the app's retraining)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="held-out share for the bundle's metrics")
    p.add_argument("--epochs", type=int, help="text model epochs (default: per architecture)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")


def _add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict categories for a catalogue (CSV, Parquet, or a folder of shards)")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR")
    _add_mapping(p, label=None, data_help="catalogue: a CSV or Parquet file, a folder of them, or a glob "
                 "(quoted) of shards")
    p.add_argument("--out", required=True, type=Path, metavar="PRED_CSV|FOLDER",
                   help="a .csv file, or a folder: one part per batch (--out-format)")
    _add_engine(p)
    p.add_argument("--out-format", choices=("parquet", "csv"), default="parquet",
                   help="the parts' format when --out is a folder (default parquet)")
    p.add_argument("--probabilities", action="store_true",
                   help="add one p:<label> column per class (a tree model: p:<path> per path it knows)")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="a tree model: stop predicted_path at the deepest level with confidence >= P")
    p.add_argument("--quiet", action="store_true")


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process, the default) or ray (Ray Data: a local cluster, or RAY_ADDRESS's)")
    p.add_argument("--workers", type=int, metavar="N", help="ray: actors, each with the model loaded "
                   "(default: one per CPU of the cluster)")
    p.add_argument("--batch-size", type=int, metavar="B", help="rows per batch (ray default: each shard in about "
                   "4 blocks per worker, 64-4096 rows; local default: a whole shard)")


def _add_embed_parser(sub) -> None:
    p = sub.add_parser("embed", help="precompute a catalogue's image embeddings into the cache (before a retrain)")
    p.add_argument("--data", required=True, type=Path, help="catalogue: a CSV or Parquet file, a folder of "
                   "them, or a glob (quoted) of shards")
    p.add_argument("--image-col", required=True, metavar="I", help="column with image file names, paths or URLs")
    p.add_argument("--image-dir", type=Path, metavar="D", help="folder that relative image names are in")
    _add_backbone(p)
    p.add_argument("--no-pretrained", action="store_true", help="random backbone weights (offline tests)")
    _add_engine(p)
    p.add_argument("--encoding", default="utf-8", help="CSV text encoding (default utf-8)")
    p.add_argument("--quiet", action="store_true")


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a model on a labelled catalogue (JSON on stdout)")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR")
    _add_mapping(p, label=True)
    p.add_argument("--quiet", action="store_true")


def _add_suspects_parser(sub) -> None:
    p = sub.add_parser("suspects", help="rank catalogue rows by how likely their label is wrong (CSV out)")
    _add_mapping(p, label=True)
    p.add_argument("--out", required=True, type=Path, metavar="CSV", help="input rows, most suspect first, "
                   "with suspect_score, suggested_label, suspected")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    _add_backbone(p)
    p.add_argument("--no-pretrained", action="store_true", help="random backbone weights (offline tests)")
    p.add_argument("--quiet", action="store_true")


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="train the demo model on the shared Flipkart catalogue if there is none")
    p.add_argument("--data-dir", type=Path, help="folder with products.csv and images/ (default: the shared demo)")
    p.add_argument("--force", action="store_true", help="retrain even if the demo model exists")


def _add_import_parser(sub) -> None:
    p = sub.add_parser("import", help="import a labelled catalogue into the app's database (as the Models page "
                       "does); prints what was new, updated and skipped")
    _add_mapping(p, label=True)
    p.add_argument("--id-col", metavar="C", help="column with the catalogue's own product ids: a re-import updates "
                   "those products (default: products are matched by their text and photo)")
    p.add_argument("--name", help="name of this catalogue in the app (default: the CSV's file name)")
    p.add_argument("--quiet", action="store_true")


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write the app's labelled dataset (or its decision log) to CSV or Parquet")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.csv|FILE.parquet")
    p.add_argument("--decisions", action="store_true", help="the decision log (every decision, undone ones too) "
                   "instead of the labelled dataset")
    p.add_argument("--quiet", action="store_true")


def _add_job_worker_parser(sub) -> None:
    """A background job's process (core.studio.jobs starts it); no help: not listed."""
    p = sub.add_parser("job-worker")
    p.add_argument("job_id", type=int)


def _add_users_parser(sub) -> None:
    """`users`: recovery from the shell by whoever owns the server's files (no log-in: a
    lost admin password is exactly when nobody can log in). Passwords come on stdin, never
    as an argument (argv is visible to every user of the machine in `ps`)."""
    from core.studio.store import ROLES

    p = sub.add_parser("users", help="add a user, reset a password or make an API token from the shell")
    users = p.add_subparsers(dest="users_command", required=True)
    q = users.add_parser("reset-password", help="set a new password (read from stdin) and end all of the "
                         "user's sessions")
    q.add_argument("name", help="username")
    q = users.add_parser("add", help="add a user; the password is read from stdin")
    q.add_argument("name", help="username")
    q.add_argument("--role", required=True, metavar="ROLE", help=f"one of {', '.join(ROLES)}")
    q.add_argument("--must-change-password", action="store_true",
                   help="the user must choose a new password at first log-in")
    q = users.add_parser("token", help="make an API token for the user (printed once, on the last line)")
    q.add_argument("name", help="username")
    q.add_argument("--label", help="what the token is for (shown on the Users page)")


def _add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="register a model bundle trained with `train --out` (and make it live)")
    models = p.add_subparsers(dest="models_command", required=True)
    q = models.add_parser("add", help="register MODEL_DIR in the app's model registry (audited)")
    q.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    q.add_argument("--activate", action="store_true", help="make it the live model (a promotion by the "
                   "system user, without a comparison)")
