"""Child processes for the fault-injection tests (tests/test_reliability.py): each does one
real piece of work against the STUDIO_HOME it is given, so the test can kill it midway.

    STUDIO_HOME=… python tests/fault_scripts.py batch CSV ZIP [PAUSE_AFTER]
    STUDIO_HOME=… python tests/fault_scripts.py import PAUSE_AFTER IMPORT-ARGS…

`batch` scores CSV + ZIP with the home's live model as the batch page does and prints
the BatchResult's counts as JSON (`score_upload`, also called in-process by the test).
`import` runs `python -m core import IMPORT-ARGS…`. With PAUSE_AFTER, the process writes
that many products inside its one transaction, then says "halfway" on stderr and waits
to be killed: the only way to hit the (short) uncommitted window every time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HALFWAY = "halfway"


def pause_after(module, name: str, calls: int) -> None:
    """Wrap `module.name` so that after its `calls`-th call the process announces HALFWAY
    and sleeps (until the test kills it); the real function still does the work."""
    real = getattr(module, name)
    seen = 0

    def wrapper(*args, **kwargs):
        nonlocal seen
        result = real(*args, **kwargs)
        seen += 1
        if seen == calls:
            print(HALFWAY, file=sys.stderr, flush=True)
            time.sleep(120)
        return result

    setattr(module, name, wrapper)


def score_upload(csv_path: Path, zip_path: Path, *, announce: bool = False) -> dict[str, int]:
    """Score a batch with the live model of STUDIO_HOME as the batch page does
    (stage_upload → load_staged → score_batch); the BatchResult's counts."""
    from core.models.classifier import Classifier
    from core.studio.auth import User
    from core.studio.batch import discard_upload, load_staged, score_batch, stage_upload
    from core.studio.registry import live_model
    from core.studio.store import Store

    store = Store()
    classifier = Classifier.load(live_model(store).path)
    upload = stage_upload(csv_path.read_bytes(), csv_path.name, zip_path.read_bytes())
    catalogue = load_staged(upload, text_cols=["title", "description"], image_col="image")
    if announce:
        print("scoring", file=sys.stderr, flush=True)
    result = score_batch(store, classifier, User.system("fault-test"), catalogue)
    discard_upload(upload)
    return {"scored": result.scored, "new": result.new_products, "ids": len(set(result.product_ids))}


def main(argv: list[str]) -> int:
    if len(argv) in (3, 4) and argv[0] == "batch":
        if len(argv) == 4:
            import core.studio.batch

            pause_after(core.studio.batch, "find_or_insert_product", int(argv[3]))
        print(json.dumps(score_upload(Path(argv[1]), Path(argv[2]), announce=True)))
        return 0
    if len(argv) > 2 and argv[0] == "import":
        import core.studio.labels
        from core.cli.main import main as cli_main

        pause_after(core.studio.labels, "insert_product", int(argv[1]))
        return cli_main(["import", *argv[2:]])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
