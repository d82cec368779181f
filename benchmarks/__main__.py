"""``python -m benchmarks``: the suite of benchmarks/suite.py (MIC against its base on the
bundled benchmarks, one table and one plot). The scripts in this folder import each other
as top-level modules (they run as ``python benchmarks/x.py``), so the folder goes on the path
first."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import main

if __name__ == "__main__":
    main()
