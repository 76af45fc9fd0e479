"""Import this before TensorFlow/Keras: it quiets TensorFlow's start-up logging and
points Keras' download cache at the runtime home (Keras reads KERAS_HOME at import)."""

from __future__ import annotations

import os

from core.settings import get_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", str(get_settings().data_dir / "keras"))


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds in one call, for repeatable training."""
    import keras

    keras.utils.set_random_seed(seed)
