"""``mic-train`` / ``python -m mic.train``: train from the Hydra config in conf/.

mic-train                                   # MIC on the bundled digits benchmark
mic-train method=source_only mic=none       # a baseline
mic-train experiment=digits_oracle          # a whole experiment
mic-train -m seed=0,1,2                     # a sweep
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mic.core.errors import MicError
from mic.experiment import format_summary, run_experiment


def user_error(exc: BaseException) -> str | None:
    """The one-paragraph message of a user error (MicError, or a config that cannot be
    instantiated), looking through the wrappers of Hydra and of DataLoader workers."""
    from hydra.errors import InstantiationException

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MicError):
            text = str(seen)
            marker = f"{type(seen).__name__}: "
            if "Original Traceback" in text and marker in text:  # re-raised from a worker
                text = text.rpartition(marker)[2].strip()
            return text
        if isinstance(seen, InstantiationException) and not isinstance(seen.__cause__, MicError):
            cause = seen.__cause__
            if (
                isinstance(cause, (TypeError, ValueError, ImportError, AttributeError))
                or cause is None
            ):
                return f"cannot build an object from the config: {seen}"
        seen = seen.__cause__ or seen.__context__
    return None


@hydra.main(version_base="1.3", config_path="pkg://mic.conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        summary = run_experiment(cfg, run_dir)
    except Exception as e:
        message = user_error(e)
        if message is None:
            raise
        print(f"mic: error: {message}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summary))
    print(f"run folder: {run_dir}")


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
