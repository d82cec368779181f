"""``python -m benchmarks``: the suite of benchmarks/suite.py (MIC against its base on the
bundled benchmarks, one table and one plot); the package puts this folder on the path."""

from suite import main

if __name__ == "__main__":
    main()
