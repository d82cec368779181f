"""The benchmark scripts import each other as top-level modules (they run as
``python benchmarks/x.py``); importing the package puts this folder on the path too, so that
``python -m benchmarks.x`` runs each of them as well."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
