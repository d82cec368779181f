"""Environment faults for tests that run ``mic-train`` in a process of its own, chosen by
``MIC_TEST_FAULT`` (tests/cli.py loads this file there before mic-train's main):

- ``read-only:<folder>``: every write below the folder fails as on a read-only mount;
- ``full-disk``: the disk reports 1 MiB free;
- ``save-fails``: ``torch.save`` fails as torch's writer does when the disk fills;
- ``no-detectron2``: ``import detectron2`` fails, as where it is not installed;
- ``no-cuda``: torch finds no CUDA device, as on a machine without a GPU;
- ``hub-offline:<folder>``: the Hugging Face hub cannot be reached (its address refuses
  connections, no proxy) and its local cache is the folder (empty or missing: nothing cached);
- ``sigterm-in-evaluation``: the process sends itself SIGTERM at the second test batch of the
  first model scored, as a cluster's scheduler does in the middle of an evaluation;
- ``sigterm-while-building``: the process sends itself SIGTERM as the run is built (after
  its log is opened, before the first iteration).
"""

import builtins
import errno
import io
import os

FAULT = os.environ.get("MIC_TEST_FAULT", "")

if FAULT.startswith("read-only:"):
    folder = os.path.abspath(FAULT.split(":", 1)[1])

    def _refuse(path):
        try:
            inside = os.path.abspath(os.fspath(path)).startswith(folder)
        except TypeError:
            return
        if inside:
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def _guard(function, writes):
        def guarded(path, *args, **kwargs):
            if writes(args, kwargs):
                _refuse(path)
            return function(path, *args, **kwargs)

        return guarded

    def _opens_for_writing(args, kwargs):
        mode = args[0] if args else kwargs.get("mode", "r")
        flags = mode if isinstance(mode, int) else 0
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

    builtins.open = io.open = _guard(builtins.open, _opens_for_writing)
    os.open = _guard(os.open, lambda args, kwargs: _opens_for_writing(args[:1], kwargs))
    os.mkdir = _guard(os.mkdir, lambda args, kwargs: True)

elif FAULT == "full-disk":
    import shutil

    _usage = shutil.disk_usage
    shutil.disk_usage = lambda path: _usage(path)._replace(free=2**20)

elif FAULT == "save-fails":
    import torch

    def _save(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
            "file data/0: file write failed"
        )

    torch.save = _save

elif FAULT == "no-detectron2":
    import sys

    sys.modules["detectron2"] = None  # type: ignore[assignment]

elif FAULT == "no-cuda":
    import torch

    torch.cuda.is_available = lambda: False

elif FAULT.startswith("hub-offline:"):
    from huggingface_hub import constants

    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        os.environ.pop(variable, None)
    constants.ENDPOINT = "http://127.0.0.1:9"  # the discard port: refused at once
    constants.HF_HUB_CACHE = FAULT.split(":", 1)[1]
    constants.HF_HUB_OFFLINE = False

elif FAULT == "sigterm-in-evaluation":
    import signal

    import mic.training.hooks

    _scores_of, _sent = mic.training.hooks.scores_of, []

    def _scores_stopped(task, model, loader, device):
        def batches():
            for i, batch in enumerate(loader):
                if i == 1 and not _sent:
                    _sent.append(True)
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

        return _scores_of(task, model, batches(), device)

    mic.training.hooks.scores_of = _scores_stopped

elif FAULT == "sigterm-while-building":
    import signal

    import mic.experiment

    _build = mic.experiment.build_experiment

    def _build_stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return _build(*args, **kwargs)

    mic.experiment.build_experiment = _build_stopped
