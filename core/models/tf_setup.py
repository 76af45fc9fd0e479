"""Import this before TensorFlow/Keras: it quiets TensorFlow's start-up logging and
points Keras' download cache at the runtime home (Keras reads KERAS_HOME at import)."""

from __future__ import annotations

import os

from core.common.settings import get_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", str(get_settings().data_dir / "keras"))


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (oneDNN, CPU features, absl) ignore
    TF_CPP_MIN_LOG_LEVEL; silence file descriptor 2 while it loads so that a CLI error
    stays the one line on stderr. Python exceptions still propagate."""
    import sys

    if "tensorflow" in sys.modules:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds in one call, for repeatable training."""
    import keras

    keras.utils.set_random_seed(seed)
