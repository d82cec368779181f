"""The ``mic-train`` command's entry point: ``mic.train.main``, with a Ctrl-C that arrives
while torch and the rest are still being imported (the first seconds) reported as one line
instead of Python's traceback. Imports nothing heavy itself."""

from __future__ import annotations

import signal
import sys

#: the line mic-train prints when a Ctrl-C stops it outside the training iterations
INTERRUPTED = (
    "mic: interrupted while starting up or finishing (outside the training iterations); "
    "what was saved before stays in the run folder"
)


def main() -> None:
    try:
        from mic.train import main as train
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    train()
