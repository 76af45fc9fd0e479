"""Running the real command line (`python -m core …`) in a subprocess, as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# TensorFlow's C++ start-up logging, printed on import whatever TF_CPP_MIN_LOG_LEVEL says
# (test_bad_input_stderr_is_exactly_that_one_line checks that bad input never gets there).
TF_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.]+:\d+\] .*)$"
)


def run_cli(home: Path, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m core ARGS` with STUDIO_HOME=home and TensorFlow's defaults, as a user gets them."""
    env = {**os.environ, "STUDIO_HOME": str(home)}
    for var in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "KERAS_HOME"):
        env.pop(var, None)  # what a user gets by default
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without TensorFlow's start-up noise."""
    return [line for line in proc.stderr.splitlines() if not TF_STARTUP_NOISE.match(line)]
