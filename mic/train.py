"""``mic-train`` / ``python -m mic.train``: train from the Hydra config in conf/.

mic-train                                   # MIC on the bundled digits benchmark
mic-train method=source_only mic=none       # a baseline
mic-train experiment=digits_oracle          # a whole experiment
mic-train -m seed=0,1,2                     # a sweep
torchrun --nproc_per_node=4 -m mic.train    # data parallel on 4 GPUs
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import importlib.util
import inspect
import itertools
import logging
import os
import re
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from mic.cli import catch_interrupts, exit_interrupted, interrupted, leave_at_next_signal
from mic.core.errors import ConfigError, MicError
from mic.experiment import (
    Experiment,
    check_writable,
    continue_with,
    describe_run,
    folder_option,
    format_summary,
    holds_run,
    lock_run_folder,
    run_experiment,
    unlock_run_folder,
    versions,
)
from mic.resume import empty_run_folder, in_sweep
from mic.schema import NAMED_GROUPS, decode_env, did_you_mean, exception_chain, spelled_alike
from mic.training import StoppedAtOnce, TrainingInterrupted, process_info
from mic.training.checkpoint import option
from mic.training.distributed import env_world_size
from mic.training.guard import SCHEDULE_WITHOUT_STEP
from mic.training.hooks import adopt_run_logs, say, to_run_log


def _readers(cfg: DictConfig | None, key: str) -> list[str]:
    """The settings of ``cfg`` whose value reads ``${key}`` (as written, unresolved)."""
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            where = f"{path}.{k}" if path else str(k)
            if isinstance(v, (dict, list)):
                walk(v, where)
            elif isinstance(v, str) and f"${{{key}}}" in v:
                found.append(where)

    if cfg is not None:
        walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


def user_error(exc: BaseException, cfg: DictConfig | None = None) -> str | None:
    """The one-paragraph message of a user error (MicError, a config that cannot be composed or
    instantiated), looking through the wrappers of Hydra and of DataLoader workers; None for
    anything else (a bug, which keeps its traceback). ``cfg``, the run's config, names the
    settings that read a missing one."""
    from hydra.errors import HydraException, InstantiationException
    from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

    for seen in exception_chain(exc):
        missing = re.match(r"Interpolation key '([\w.]+)' not found", str(seen))
        where = getattr(seen, "full_key", None) if isinstance(seen, InterpolationKeyError) else None
        raw = (
            _at(OmegaConf.to_container(cfg, resolve=False), where)
            if where and cfg is not None
            else None
        )
        if missing and isinstance(raw, str) and "${." in raw:  # (OmegaConf names a part alone)
            return _one_paragraph(
                f"{where} reads {raw}, a relative interpolation (a key beside it, or above it "
                "for each further dot) that this config does not have: fix the interpolation"
            )
        if isinstance(seen, InterpolationKeyError) and missing and "." in missing[1]:
            group, leaf = missing[1].split(".", 1)
            where = getattr(seen, "full_key", None)
            readers = [r for r in _readers(cfg, missing[1]) if not r.startswith(f"{group}.")]
            own = (  # a class of one's own is passed the added setting too: set the reader
                f"Set {' or '.join(f'{r}=...' for r in readers)} (the value it would read), "
                f"give it (+{missing[1]}=...: the {group}'s class is then passed {leaf} too)"
                if readers
                else f"Give it (+{missing[1]}=...)"
            )
            return _one_paragraph(
                f"{f'{where} is' if where else 'a setting of the config reads'} "
                f"${{{missing[1]}}}, which this config does not have: the {group} chosen sets "
                f"no {leaf}. {own}, or choose a {group} that has it"
            )
        if isinstance(seen, InterpolationKeyError) and missing:  # (a root key: a typo's)
            alike = did_you_mean(missing[1], [str(k) for k in cfg] if cfg is not None else [])
            return _one_paragraph(
                f"{where or 'a setting of the config'} reads ${{{missing[1]}}}, which this "
                f"config does not have.{alike or ''} Fix the interpolation or give the setting "
                f"(+{missing[1]}=...)"
            )
        if isinstance(seen, (OmegaConfBaseException, HydraException)) and not isinstance(
            seen, InstantiationException
        ):  # a key that does not exist, a value that is missing or of the wrong type
            return _one_paragraph(str(seen))
        if isinstance(seen, MicError):
            text, notes = str(seen), getattr(seen, "__notes__", [])
            if notes:  # e.g. where the run saved its state (run_experiment)
                text = f"{text.rstrip().rstrip('.')}. {' '.join(notes)}"
            if "Original Traceback" in text:  # re-raised from a worker: its message alone
                names = "|".join(c.__name__ for c in _subclasses(MicError))
                last = [*re.finditer(rf"\b(?:{names}): ", text)][-1:]
                text = text[last[0].end() :] if last else text
            return _one_paragraph(text)
        if isinstance(seen, TypeError) and (said := _forward_problem(seen, cfg)):
            return _one_paragraph(" ".join([said, *getattr(seen, "__notes__", [])]))
        if isinstance(seen, InstantiationException) and _out_of_memory(seen.__cause__):
            asked = re.search(r"allocate (\d+) bytes", str(seen.__cause__))
            key = re.search(r"full_key: ([\w.]+)", str(seen))
            sizes = [a for a in sys.argv[1:] if "=" in a and _large(a.split("=", 1)[1])]
            return _one_paragraph(
                f"cannot build {key[1] if key else 'an object of the config'}: it asks for more "
                "memory than this machine has"
                + (f" ({int(asked[1]) / 2**30:,.1f} GiB)" if asked else "")
                + ", so a size it is built with is too large (a width, a layer's dimension, a "
                "class count; it may read one set elsewhere)"
                + (f". Large numbers given on the command line: {' '.join(sizes)}" if sizes else "")
            )
        if isinstance(seen, InstantiationException) and not isinstance(seen.__cause__, MicError):
            cause = seen.__cause__
            if (
                isinstance(cause, (TypeError, ValueError, ImportError, AttributeError))
                or cause is None
            ):
                target = re.search(r"Error locating target '([\w.]+)'", str(seen))
                imports = [e for e in exception_chain(exc) if isinstance(e, ImportError)]
                where = _import_hint(target.group(1), imports[-1]) if target and imports else ""
                said = str(seen).replace(
                    ", set env var HYDRA_FULL_ERROR=1 to see chained exception", ""
                )
                return _one_paragraph(
                    f"cannot build an object from the config: {said}{where}{_group_hint(said)}"
                )
    return None


def _out_of_memory(error: BaseException | None) -> bool:
    """Whether ``error`` is torch's refusal to allocate a tensor (no memory for it, or a size
    beyond what a tensor can hold)."""
    said = str(error)
    too_big = ("can't allocate memory", "out of memory", "Storage size calculation overflowed")
    named = isinstance(error, RuntimeError) and any(s in said for s in too_big)
    return named or type(error).__name__ == "OutOfMemoryError"


def _large(value: str) -> bool:
    """Whether an override's value holds a number of 10,000 or more (``1e8``, ``[8,1000000]``)."""
    return any(float(n) >= 1e4 for n in re.findall(r"\d+(?:\.\d*)?(?:[eE]\+?\d+)?", value))


def _forward_problem(error: TypeError, cfg: DictConfig | None) -> str | None:
    """The fix for a model (the class ``model._target_`` names) whose forward needs more than
    the images mic gives it; None for any other TypeError (a fault inside the model or a
    term of one's own keeps its traceback)."""
    said = str(error).split("\n")[0]
    needs = re.search(r"(\w+)\.forward\(\) missing \d+ required positional arguments?: (.*)", said)
    target = str(OmegaConf.select(cfg, "model._target_", default="")) if cfg is not None else ""
    if needs and target.rsplit(".", 1)[-1] == needs[1]:
        return (
            f"{needs[1]}.forward needs {needs[2]} besides the images, but mic calls "
            "model(images) (and, for the alignment methods, model(images, "
            "return_features=True)): give those arguments defaults, or wrap the model in one "
            "whose forward takes the images alone"
        )
    return None


def _group_hint(said: str) -> str:
    """For a class of one's own given a config group's argument it does not take (a
    ``model._target_=...`` or ``method.terms.<name>._target_=...`` on the command line keeps
    the other keys of that config): how to replace the whole group."""
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", said)
    group = re.search(r"full_key: ((?:model|task|dataset|method\.terms)(?:\.\w+)*)", said)
    target = re.search(r"call to target '([\w.]+)'", said)
    if not (unexpected and group) or (target and target.group(1).startswith("mic.")):
        return ""  # mic's own class given an argument it lacks: the message says which
    key, extra = group.group(1), unexpected.group(1)
    top = key.split(".")[0]  # the config group (dataset for dataset.source)
    if top == "method" and extra == "weight" and key.count(".") == 2:  # a term of one's own
        return (
            f". A loss term takes its weight (lambda): give "
            f"{target.group(1).rsplit('.', 1)[-1] if target else 'its class'}.__init__ a weight "
            "argument and pass it on, super().__init__(weight) (mic.LossTerm)"
        )
    from mic.schema import _argument_names

    taken = _argument_names(target.group(1)) if target else None
    name = target.group(1).rsplit(".", 1)[-1] if target else ""
    own = (
        re.search(rf"\b{re.escape(name)}(\.__init__)?\(\) got an unexpected", said)
        if name
        else None
    )
    # what the class takes, where its own call refused the key (not a call inside it); no
    # guess at the key meant: it may be the replaced class's own (weighting for weight)
    takes = f" {name} takes {sorted(taken)}." if taken and own else ""
    leftover = _bundled_key(top, extra)  # (weighting of mic's self_training: no typo)
    close = did_you_mean(extra, sorted(taken)) if taken and own and not leftover else ""
    if close:  # (thresold in a method file of one's own: a typo)
        takes += f"{close} (misspelt where {key} is set?) Otherwise:"
    hint = (
        f".{takes} A _target_ of your own under {key} is given the other keys of its config "
        f"too ({key}.{extra} among them, where it replaced a class of mic's): drop them "
        f"(~{key}.{extra}), or "
    )
    if top == "method" and key.count(".") > 2:  # a part of a term (MIC's masker)
        return (
            hint + "write the term's config in a method or mic config of yours (docs/new_task.md)"
        )
    if top == "method":  # one loss term among others
        return hint + (
            f"add yours as a term of its own (+method.terms.mine._target_=...) and switch this "
            f"one off ({key}=null)"
        )
    return hint + (
        f"replace the whole {top} config: a {top}/<name>.yaml of yours chosen with "
        f"{top}=<name>, or 'override /{top}: null' in an experiment file (docs/new_task.md)"
    )


def _bundled_key(top: str, key: str) -> bool:
    """Whether ``key`` is a setting in mic's own configs of group ``top`` (or in its
    experiments, or, for methods, its MIC configs): left over from a class of mic's that a
    ``_target_`` of one's own replaced, not misspelt."""
    bundled = importlib.resources.files("mic.conf")
    setting = re.compile(rf"^\s*{re.escape(key)}\s*:", re.M)
    folders = [top, "experiment", *(["mic"] * (top == "method"))]
    return any(
        setting.search(f.read_text())
        for folder in folders
        if bundled.joinpath(folder).is_dir()
        for f in bundled.joinpath(folder).iterdir()
        if f.name.endswith(".yaml")
    )


def _import_hint(path: str, error: ImportError) -> str:
    """What a ``_target_`` of ``path`` that Hydra could not import lacks: its module (with
    where mic-train imports from), a name in its module, or a module it imports itself."""
    parts, name = path.split("."), str(getattr(error, "name", "") or "")
    if name != parts[0] and not name.startswith(f"{parts[0]}."):  # a module the target imports
        return f" ({error})"
    for n in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:n])
        try:
            if importlib.util.find_spec(module) is not None:
                return f" (module {module!r} has no {'.'.join(parts[n:])!r})"
        except ImportError:
            continue
    return (
        f" ({error}: mic-train imports a _target_ from the current folder, {os.getcwd()}, and "
        "from installed packages; run it from the folder that holds your module, or install it)"
    )


def _subclasses(cls: type) -> list[type]:
    """``cls`` and every class derived from it."""
    return [cls, *(d for c in cls.__subclasses__() for d in _subclasses(c))]


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


#: set by ``main``, which tells Hydra to write no record of the command
#: (``hydra.output_subdir=null``; ``_main`` writes it, unless the run folder already holds a
#: run, whose record a refused run must not overwrite and an accepted resume writes beside):
#: ``subdir``, where the record goes (``hydra.output_subdir``; None: no record), and
#: ``sweep``, the bytes of the sweep folder's ``multirun.yaml`` before Hydra rewrote it
_RECORD: dict[str, Any] = {}


def _restore_logs(folder: Path, sizes: dict[str, int]) -> None:
    """The log files of ``folder`` as they were (``sizes``: name -> bytes): what a refused
    run appended is cut off, a log file it created is removed."""
    logging.shutdown()  # flush and close Hydra's file handlers
    for log in folder.glob("*.log"):
        if log.name in sizes:
            os.truncate(log, sizes[log.name])
        else:
            log.unlink()


def _as_hydra_would(record: DictConfig, subdir: str) -> DictConfig:
    """``record`` (a config with a ``hydra`` node) as Hydra would have written it: its
    ``output_subdir`` ``subdir``, without the ``hydra.output_subdir=null`` mic-train added."""
    record.hydra.output_subdir = subdir
    given = OmegaConf.to_container(record.hydra.overrides.hydra)  # as typed: ${seed} unresolved
    record.hydra.overrides.hydra = [o for o in given if o != f"{SUBDIR}null"]  # type: ignore[union-attr]
    return record


def _write_hydra_record(cfg: DictConfig, folder: Path) -> None:
    """What Hydra writes into ``<run folder>/.hydra`` (the job's config, Hydra's own config,
    the command's overrides), written into ``folder``; in a sweep, its ``multirun.yaml``
    mended as Hydra would have written it."""
    from omegaconf import OmegaConf

    own = OmegaConf.masked_copy(HydraConfig.instance().cfg, "hydra")  # read-only
    hydra_cfg = _as_hydra_would(OmegaConf.create(OmegaConf.to_container(own)), folder.name)
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", hydra_cfg.hydra.overrides.task),
    ):
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
    sweep = Path(HydraConfig.get().sweep.dir) / "multirun.yaml"
    if in_sweep() and sweep.is_file():
        OmegaConf.save(_as_hydra_would(OmegaConf.load(sweep), folder.name), sweep)


#: the run folders of a sweep's jobs that stopped on a user error (mic-train then exits 2),
#: and the number of jobs started
_FAILED_JOBS: list[str] = []
_JOBS = [0]


@hydra.main(version_base="1.3", config_path="pkg://mic.conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    adopt_run_logs()  # Hydra's job log: the run's story goes there (a caller's logs are its own)
    run_dir = HydraConfig.get().runtime.output_dir
    _JOBS[0] += 1
    is_main = process_info().is_main
    if HydraConfig.get().job.chdir:  # Hydra moved into the run folder before this was read
        os.chdir(hydra.utils.get_original_cwd())
        _job_failed(
            "hydra.job.chdir=true runs the job in its run folder, where the relative paths of "
            "the config (data roots, init_from, resume) would not be found: mic-train reads "
            f"them from the folder it is started in and writes into {folder_option()}; leave "
            "hydra.job.chdir out",
            run_dir,
        )
        return
    around = data_folder_around(cfg, run_dir)
    if around is not None:
        _job_failed(
            f"the run folder {run_dir} lies inside {around[0]}={around[1]}: mic-train writes its "
            "checkpoints and prediction images there, which later runs would read as data; "
            f"choose a run folder outside the data ({folder_option()})",
            run_dir,
        )
        return
    given = [str(o).split("=", 1)[0] for o in HydraConfig.get().overrides.hydra]
    unread = "hydra.run.dir" if in_sweep() else "hydra.sweep.dir"  # (Hydra ignores it)
    if _JOBS[0] == 1 and is_main and unread in given:
        said = (
            f"hydra.run.dir is not read with -m: the jobs' folders are "
            f"{HydraConfig.get().sweep.dir}/<job number>; hydra.sweep.dir chooses them"
            if in_sweep()
            else f"hydra.sweep.dir is read with -m alone: the run folder is {run_dir}; "
            "hydra.run.dir chooses it"
        )
        say(f"mic: warning: {said}", sys.stderr, logging.WARNING)
    for key in ("dataset.name", "method.name"):  # given in a config file (the command line's
        name = OmegaConf.select(cfg, key, default=None)  # are refused by usage_problem)
        if isinstance(name, str) and _separated(name):
            _job_failed(
                f"{key} is '{name}': {key} names the run folder and log: give it without '/'",
                run_dir,
            )
            return
    try:  # one run at a time in a folder: before anything is read or written there
        lock = lock_run_folder(Path(run_dir)) if is_main else None
    except ConfigError as e:  # the log is the other run's: it is left to it
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()
        _job_failed(_one_paragraph(str(e)), run_dir)
        return
    try:
        _run_job(cfg, run_dir, is_main)
    finally:
        unlock_run_folder(lock)


def _run_job(cfg: DictConfig, run_dir: str, is_main: bool) -> None:
    """One job of ``_main``, its run folder locked."""
    held = holds_run(Path(run_dir))  # then refused, or resumed
    _BUILT[0] = False
    # Hydra has opened the job's log (empty if it is new): a refused run removes it
    logs = {p.name: p.stat().st_size for p in Path(run_dir).glob("*.log") if p.stat().st_size}
    accepted, subdir = False, _RECORD.get("subdir")
    if subdir is not None and is_main and not held:
        _write_hydra_record(cfg, Path(run_dir) / subdir)

    def start(exp: Experiment) -> None:
        """The run is built: stop if a Ctrl-C came meanwhile (one a library caught); a resume
        into the run's own folder is accepted: its record beside the run's."""
        _BUILT[0] = True  # (warnings from here on: each process's)
        if interrupted():
            raise KeyboardInterrupt
        say(describe_run(exp))  # (process 0's, into the run log too)
        if is_main:  # (the log alone: which run of the folder, under which versions)
            given = " ".join(HydraConfig.get().overrides.task) or "(no setting)"
            made = ", ".join(f"{k} {v}" for k, v in versions().items())
            to_run_log(f"command line: {given}; seed {cfg.seed}; {made}")
        nonlocal accepted
        accepted = held
        if held and subdir is not None and is_main:
            _write_hydra_record(cfg, Path(run_dir) / f"{subdir}_resumed")
        original = _RECORD.get("sweep")
        if original is not None and is_main:  # (a sweep folder used before)
            # the sweep's first record stays; the later command's goes beside it
            sweep = Path(HydraConfig.get().sweep.dir)
            if not _RECORD.get("sweep_resumed"):
                resumed = (sweep / "multirun.yaml").read_bytes()
                (sweep / "multirun_resumed.yaml").write_bytes(resumed)
                _RECORD["sweep_resumed"] = True
            (sweep / "multirun.yaml").write_bytes(original)  # (each job's record mended it)

    try:
        summary = run_experiment(cfg, run_dir, on_start=start)
    except (StoppedAtOnce, TrainingInterrupted) as e:  # a stop, or a second Ctrl-C at once
        at_once = isinstance(e, StoppedAtOnce)
        saved = any(Path(run_dir, "checkpoints").glob("*.pt"))  # (none: stopped while the
        where = "the checkpoints saved before are" if at_once else "its checkpoint is"  # start
        say(  # model was scored, before the first iteration)
            f"mic: {e}; {where} in {run_dir}/checkpoints. Continue with the same command plus: "
            f"{continue_with(run_dir)}"
            if saved
            else f"mic: {e}, before any checkpoint was written: run the same command again",
            sys.stderr,
            logging.WARNING,
        )
        # 128 + the signal, also where it reached another process
        sys.exit(128 + signal.SIGINT if at_once else e.exit_code)  # type: ignore[union-attr]
    except Exception as e:
        if interrupted():  # a Ctrl-C that an import turned into another error
            raise KeyboardInterrupt from e
        if _lost_peer(e):
            say(
                f"mic: error: another process of the run stopped ({str(e).splitlines()[0]}); "
                f"the last checkpoint is in {run_dir}/checkpoints. Continue with the same "
                f"command plus: {continue_with(run_dir)}",
                sys.stderr,
                logging.ERROR,
            )
            leave_at_next_signal()  # said: torchrun's SIGTERM to the survivors ends it at once
            sys.exit(1)
        message = user_error(e, cfg)
        if message is None:  # a fault in code (mic's or one's own): its traceback, logged too
            to_run_log(f"the run stopped on an error:\n{traceback.format_exc()}", logging.ERROR)
            raise
        _job_failed(message, run_dir)
        return
    finally:
        if held and not accepted and is_main:  # refused: the folder's logs as they were
            _restore_logs(Path(run_dir), logs)
            if _RECORD.get("sweep") is not None:  # and the sweep's record
                (Path(HydraConfig.get().sweep.dir) / "multirun.yaml").write_bytes(_RECORD["sweep"])
    if is_main:
        say(format_summary(summary))
        say(f"run folder: {run_dir}")


#: what torch's process-group backends say when a peer process died (gloo, NCCL)
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def _lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process of the run
    died (killed, out of memory), under torchrun."""
    if env_world_size() <= 1 or not isinstance(error, RuntimeError):
        return False
    return any(text in str(error) for text in _PEER_LOST)


def data_folder_around(cfg: DictConfig, run_dir: str) -> tuple[str, str] | None:
    """The data set's setting (key, value) naming a folder that is ``run_dir`` or holds it
    (a reader that lists a folder's images would read the run's prediction images, and
    a resume would find the data changed); None where there is none."""
    try:
        data = OmegaConf.to_container(cfg.dataset, resolve=True)
    except Exception:  # (a value missing or unresolvable: named where it is read)
        return None
    run = Path(run_dir).resolve()

    def folders(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from folders(v, f"{key}.{k}")
        elif isinstance(node, list):
            for v in node:
                yield from folders(v, key)
        elif isinstance(node, str) and node.strip() and Path(node).expanduser().is_dir():
            yield key, node

    for key, value in folders(data, "dataset"):
        folder = Path(value).expanduser().resolve()
        if folder == run or folder in run.parents:
            return key, value
    return None


def _job_failed(message: str, run_dir: str) -> None:
    """Report a job's user error; exit with status 2, unless the job is one of a sweep,
    whose other jobs go on (``main`` names the failed ones at the end)."""
    say(f"mic: error: {message}", sys.stderr, logging.ERROR)
    if in_sweep():
        _FAILED_JOBS.append(run_dir)
        return
    sys.exit(2)


def _leave_process_group() -> None:
    """Under torchrun, after a run that ended well: wait for every process, then close the
    group (a process that exits with the group's threads still running may abort: SIGABRT,
    "terminate called without an active exception", seen once under load)."""
    if env_world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


#: ``${now:<format>}`` as Hydra resolves it alike: a format without quotes, escapes, nested
#: interpolations or whitespace around it (any other form is left to Hydra)
_NOW = re.compile(r"(?<!\\)\$\{now:([^'\"\\${}\s](?:[^'\"\\${}]*[^'\"\\${}\s])?)\}")


def pin_now(args: list[str], when: datetime) -> list[str]:
    """``args`` with each plain ``${now:<format>}`` written out as ``when`` in that format:
    under torchrun every process would resolve it at its own time (each its own run folder);
    the processes share rank 0's ``when``."""
    return [_NOW.sub(lambda m: when.strftime(m.group(1)), a) for a in args]


def _join_torchrun() -> None:
    """Under torchrun, start the process group before Hydra, so that every process writes into
    the run folder of rank 0 (same time stamp) and only rank 0 writes Hydra's own files."""
    if os.environ.get("WORLD_SIZE", "").strip() in ("", "0", "1"):  # (another: judged there)
        return
    from mic.training.distributed import broadcast_object, init_distributed

    # the config is not composed yet: a device=cpu on the command line spares each process a
    # CUDA context (either way the group reduces CPU and CUDA tensors)
    on_cpu = "device=cpu" in sys.argv[1:]
    group = init_distributed("cpu" if on_cpu else "auto")
    when = datetime.fromisoformat(broadcast_object(datetime.now().isoformat()))
    os.environ.setdefault("MIC_RUN_STAMP", when.strftime("%Y-%m-%d_%H-%M-%S"))
    sys.argv[1:] = pin_now(sys.argv[1:], when)
    if not group.is_main:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]


#: the override that says where Hydra writes its record of a command in the run folder
SUBDIR = "hydra.output_subdir="
#: Hydra's options that print and run nothing
_NO_RUN = (
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--help",
    "-h",
    "--hydra-help",
    "--shell-completion",
    "-sc",
)


def folder_key(argv: Sequence[str]) -> str:
    """The option that chooses a command line's folder: ``hydra.sweep.dir`` for ``-m`` (or
    ``hydra.mode=MULTIRUN``), else ``hydra.run.dir``."""
    sweep = "-m" in argv or "--multirun" in argv or "hydra.mode=MULTIRUN" in argv
    return "hydra.sweep.dir" if sweep else "hydra.run.dir"


def run_folder(argv: list[str]) -> Path:
    """The run folder (or, for ``-m``, the sweep folder) a command line asks for: its
    ``hydra.run.dir`` / ``hydra.sweep.dir``, else the folder below which the default lies."""
    key = f"{folder_key(argv)}="
    given = [a[len(key) :] for a in argv if a.startswith(key)]
    return Path(given[-1]) if given else Path("runs")


def _config_dirs(argv: Sequence[str]) -> list[Path] | None:
    """The config folders of one's own that a command line adds (``--config-dir X``,
    ``-cd X``, ``--config-dir=X``, ``hydra.searchpath=[file://X,Y]``); None when it adds
    some that are no folder path (``pkg://``)."""
    dirs = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in ("--config-dir", "-cd"):
            if eq:
                dirs.append(Path(value))
            elif i + 1 < len(argv):
                dirs.append(Path(argv[i + 1]))
        elif name.lstrip("+") == "hydra.searchpath" and eq:
            for entry in value.strip().strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if "://" in entry and not entry.startswith("file://"):
                    return None
                if entry:
                    dirs.append(Path(entry.removeprefix("file://")))
    return dirs


def _shadowed_configs(own: Sequence[Path]) -> str | None:
    """The message for config files of one's own folders that have the name of one of mic's
    (``method/mean_teacher.yaml``): Hydra searches mic's configs first, so the run would take
    mic's and ignore the file (an edited copy, without a word). Only mic's config groups are
    looked into (a ``config.yaml`` of one's own project beside them is left alone)."""
    bundled = importlib.resources.files("mic.conf")
    groups = [g.name for g in bundled.iterdir() if g.is_dir() and not g.name.startswith("_")]
    own = [f for f in own if Path(str(bundled)).resolve() != f.resolve()]  # (mic's, given)
    clashes = [
        path
        for folder in own
        for group in groups
        for path in sorted((folder / group).glob("*.yaml"))
        if bundled.joinpath(group, path.name).is_file()
    ]
    if not clashes:
        return None
    first = clashes[0].relative_to(next(f for f in own if clashes[0].is_relative_to(f)))
    names = ", ".join(str(c) for c in clashes[:3]) + (", ..." if len(clashes) > 3 else "")
    return (
        f"{len(clashes)} config file(s) of your config folder have the name of one of mic's "
        f"({names}): Hydra reads mic's first, so yours would be ignored; give yours a name of "
        f"its own (e.g. {first.parent / ('my_' + first.name)}, then "
        f"{first.parent}=my_{first.stem})"
    )


@functools.lru_cache(maxsize=1)
def _root_defaults() -> tuple[tuple[str, Any], ...]:
    """The ``group: option`` entries of mic's root config's defaults list (``optional`` ones
    left out), unresolved, in order (read once: the checks ask per argument and per sweep
    job)."""
    text = (importlib.resources.files("mic.conf") / "config.yaml").read_text()
    root = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    entries = [e for e in root.get("defaults", []) if isinstance(e, dict)]  # type: ignore[union-attr]
    return tuple(
        (str(k), v) for e in entries for k, v in e.items() if not str(k).startswith("optional")
    )


def _chosen_groups() -> set[str]:
    """The config groups whose option mic's root config chooses (its defaults list)."""
    return {key.split("@")[0] for key, _ in _root_defaults()}


def _nested_group_problem(arg: str, group: str, part: str, option: str, confs: list) -> str:
    """The message for ``group/part=option`` on the command line, where ``group/part`` is no
    config group: a part that some of the group's configs choose in their defaults list
    (``model/segmenter=smp``: HRDA's inner model), or none."""
    choose = re.compile(rf"^\s*-\s*[\w/]+@{re.escape(part)}\s*$", re.M)
    files = [f for c in confs if (c / group).is_dir() for f in (c / group).iterdir()]
    choosers = sorted(
        {f.stem for f in files if f.suffix == ".yaml" and choose.search(f.read_text())}
    )
    if not choosers:
        names = _folder_options([c / group for c in confs if (c / group).is_dir()])
        return (
            f"{arg}: there is no config group {group}/{part}: an option of {group} is chosen "
            f"with {group}=<option> ({', '.join(names)}), a setting with a dot "
            f"({group}.{part}=...)"
        )
    return (
        f"{arg}: {group}/{part} is no config group of its own: the {group} configs that have a "
        f"{part} ({', '.join(choosers)}) choose it in their own defaults list, which the "
        f"command line cannot change. Write your own {group} config that chooses it (e.g. "
        f"my_conf/{group}/mine.yaml with the defaults list [{option}@{part}, _self_] and the "
        f"other settings of the one you start from) and run mic-train --config-dir my_conf "
        f"{group}=mine" + (" (docs/segmentation.md: HRDA's inner model)" * (part == "segmenter"))
    )


def _is_group(name: str) -> bool:
    """Whether ``name`` is one of mic's config groups (``+model=x`` adds a group's option)."""
    return (importlib.resources.files("mic.conf") / name).is_dir()


def _taken(target: Any, name: str) -> bool:
    """Whether the class or function ``target`` names takes an argument ``name`` (True where
    it takes any, ``**kwargs``, or cannot be read here: ``mic.schema._argument_names``)."""
    from mic.schema import _argument_names

    names = _argument_names(str(target))
    return names is None or name in names


def _search_path(own: Sequence[Path] | None) -> list[str]:
    """The override that adds the config folders ``own`` to Hydra's search path (none for
    none)."""
    if not own:
        return []
    return [f"hydra.searchpath=[{','.join(f'file://{d.resolve()}' for d in own)}]"]


def _options_setting(group: str, key: str) -> list[str]:
    """mic's options of config group ``group`` whose file sets the dotted ``key`` below the
    group (``momentum``, ``terms.dann.weight``)."""
    folder = importlib.resources.files("mic.conf") / group
    if not folder.is_dir():
        return []
    found = []
    for name in _folder_options([folder]):
        try:
            raw = OmegaConf.to_container(OmegaConf.load(str(folder / f"{name}.yaml")))
        except Exception:
            continue
        if _at(raw, key) is not _ABSENT:
            found.append(name)
    return found


def _folder_options(folders: Sequence[Any]) -> list[str]:
    """The options of a config group's ``folders`` (mic's and one's own), sorted; files
    starting with ``_`` (parts of others) are none."""
    names = {p.name[:-5] for f in folders for p in f.iterdir() if p.name.endswith(".yaml")}
    return sorted(n for n in names if not n.startswith("_"))


def _unknown_option(group: str, value: str, folders: Sequence[Any]) -> str:
    """The message for an option ``value`` that none of the ``group`` ``folders`` holds."""
    options = _folder_options(folders)
    same = spelled_alike(value, options)  # SDAT, cdan-e
    hint = f" Did you mean: {same}?" if same else did_you_mean(value, options)
    return f"unknown {group} {value!r}.{hint} The {group} options: {', '.join(options)}"


def _experiment_problem(path: Any, confs: Sequence[Any]) -> str | None:
    """What keeps the experiment file ``path`` from composing, in mic's words (Hydra's would
    name its internal package paths): a defaults list without the first line
    ``# @package _global_``, or an entry of it that chooses an option no config folder holds."""
    text, loaded, unreadable = _read_config_file(path)
    if unreadable:
        return unreadable
    defaults = loaded.get("defaults", []) if isinstance(loaded, dict) else []
    where = f"experiment file {path}"
    if defaults and _package(text) != "_global_":
        return (
            f"{where} has a defaults list but does not start with the line "
            "'# @package _global_' (Hydra reads it only above any other line, comments "
            "included); add that line as its first line (as in mic's "
            "conf/experiment/*.yaml) so that its overrides and keys set the root config"
        )
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, str) and entry != "_self_":
            key, value = entry.rpartition("/")[::2]
        elif isinstance(entry, dict) and len(entry) == 1:
            ((key, value),) = entry.items()
            key = str(key).split("@")[0].removeprefix("override ").strip()
        else:
            continue
        if str(key).startswith("optional ") or not isinstance(value, str) or "$" in value:
            continue
        # an absolute group (/model) from the config root, else below the file's group
        group = key[1:] if key.startswith("/") else f"experiment/{key}".rstrip("/")
        if group.startswith("hydra") or not value:
            continue
        folders = [c / group for c in confs if (c / group).is_dir()]
        files = [f / f"{value}.yaml" for f in folders if (f / f"{value}.yaml").is_file()]
        if folders and not files:
            return f"{where}, defaults list: {_unknown_option(group, value, folders)}"
        problem = _config_file_problem(files[0], group) if files else None
        if problem:
            return problem
    return None


def _read_config_file(path: Any) -> tuple[str, Any, str | None]:
    """A config file's text, its contents (None where YAML cannot read them) and, then, the
    one-line message naming the place (Hydra's traceback would end with it)."""
    text = path.read_text()
    try:
        return text, OmegaConf.to_container(OmegaConf.create(text)), None
    except Exception as e:  # yaml's errors carry the place they met
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        return text, None, f"config file {path}{where}: YAML cannot read it ({problem})"


#: the keys of a method file that hold no loss term (``step``: a step strategy's ``_target_``)
_METHOD_FILE_KEYS = ("name", "terms", "step", "defaults")


def _config_file_problem(path: Any, group: str) -> str | None:
    """What keeps a chosen config file from composing as meant, in one line: YAML that cannot
    be read (Hydra's traceback would end with the line); for a method or dataset file (of
    mic's layout, without ``# @package``), a name with ``/`` (it names the run folder and
    log); for a method file, no ``name`` where no method of its defaults list may give one,
    ``terms`` that is no mapping, a
    term named ``mic`` (the mic option, composed after the method, writes
    ``method.terms.mic``: it would be replaced), or objects (``_target_``) beside ``terms:``
    that no interpolation reads (terms that would never train)."""
    text, loaded, unreadable = _read_config_file(path)
    if (
        unreadable
        or group not in ("method", "dataset")
        or not isinstance(loaded, dict)
        or _package(text) is not None
    ):
        return unreadable  # or None: another layout (# @package), Hydra judges
    where = f"{group} file {path}"
    name = loaded.get("name")
    if name is not None and _separated(str(name)):
        return f"{where}: name: {name!r} names the run folder and log: give it without '/'"
    if group == "dataset":
        return None
    defaults = loaded.get("defaults") or []
    inherited = [  # another method of its group (mean_teacher, /method/x): it may set the name
        d for d in defaults if isinstance(d, str) and d != "_self_" and "@" not in d
    ]
    if name is None and not inherited:
        return f"{where} has no name: (it names the run folder and log): add name: {path.stem}"
    terms = loaded.get("terms", {})
    if not isinstance(terms, dict):
        return (
            f"{where}: terms: must map each term's name to its config (terms: / source: / "
            f"_target_: mic.SourceSupervision), got a {type(terms).__name__}"
        )
    if "mic" in terms:
        return (
            f"{where}: a term named 'mic' is replaced by MIC's (the mic option writes "
            "method.terms.mic; mic=none removes it): give your term another name (MIC's own "
            "settings go on the command line or in an experiment file: "
            "method.terms.mic.weight=...)"
        )
    beside = [  # an object that a term reads through ${method.<key>} is no stray term
        str(k)
        for k, v in loaded.items()
        if k not in _METHOD_FILE_KEYS
        and isinstance(v, dict)
        and "_target_" in v
        and f"method.{k}" not in text
    ]
    if beside:
        return (
            f"{where}: {', '.join(beside)} (a _target_ each) beside terms:, where no loss term "
            "is read, and no interpolation reads them: a loss term goes under terms: (as in "
            "mic's conf/method/*.yaml)"
        )
    return None


def _chosen_file_problem(path: Any, group: str, confs: Sequence[Any]) -> str | None:
    """``_experiment_problem`` of an experiment file, ``_config_file_problem`` of another."""
    if group == "experiment":
        return _experiment_problem(path, confs)
    return _config_file_problem(path, group)


def _package(text: str) -> str | None:
    """A config file's ``# @package`` as Hydra reads it: from the header, the leading lines
    of the form ``# @key value`` (blank lines skipped; any other line ends it)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        found = re.match(r"\s*#\s*@(\S+)\s+(\S+)\s*$", line)
        if not found:
            return None
        if found.group(1) == "package":
            return found.group(2)
    return None


#: Hydra's modes (long and short flag), of which one command line chooses one
_MODES = {
    "--run": "-r",
    "--multirun": "-m",
    "--cfg": "-c",
    "--info": "-i",
    "--shell-completion": "-sc",
}


#: the settings that name the run's log file (``<dataset.name>_<method.name>...log``) and
#: folder
RUN_NAMES = ("method.name", "dataset.name", "hydra.job.name")


def usage_problem(argv: Sequence[str]) -> str | None:
    """The message for a command line Hydra would refuse with a traceback (two of its modes,
    as ``-m ... --cfg job``) or read otherwise than it says (``+hydra.searchpath=``, which
    Hydra ignores: it reads the search path from ``hydra.searchpath=`` alone) or not at all
    (a value starting with ``~``, which the shell leaves unexpanded after ``key=``; an unquoted
    value with characters beyond ASCII, which Hydra's lexer refuses; a ``method.name`` or
    ``dataset.name`` with a ``/``, which cannot name the run's log file); None if none of
    these."""
    flags = {a.split("=", 1)[0] for a in argv}
    modes = [long for long, short in _MODES.items() if {long, short} & flags]
    if len(modes) > 1:
        sweep = "--multirun" in modes and "--cfg" in modes
        return (
            f"{' and '.join(modes)} cannot be combined: Hydra runs one of --run, --multirun "
            "(-m), --cfg, --info, --shell-completion"
            + (
                "; to see one job of a sweep, give --cfg job without -m and one value per setting"
                if sweep
                else ""
            )
        )
    home = [a for a in argv if "=" in a and a.split("=", 1)[1].startswith("~")]
    if home:  # the shell leaves ~ unexpanded after key=, and Hydra's grammar refuses it
        key, value = home[0].split("=", 1)
        return (
            f"{home[0]}: a value starting with ~ is not read by Hydra's override grammar (and "
            "the shell expands ~ after = only where the key is a plain name): write the path in "
            f"full, {key}={os.path.expanduser(value)}"
        )
    wide = [a for a in argv if "=" in a and not a.isascii() and not _quoted(a.split("=", 1)[1])]
    if wide:  # Hydra's lexer reads unquoted values of ASCII characters alone: all at once
        typed = " ".join(option(*a.split("=", 1), interpolations=True) for a in wide)
        return (
            f"{', '.join(wide)}: Hydra's override grammar reads characters beyond ASCII (such "
            f"as ü or é) only in a quoted value: write {typed} (the single quotes for the "
            "shell, the double ones for Hydra)"
        )
    stray = [a for a in _split_options(argv)[1] if "=" not in a and not a.startswith("~")]
    if stray:  # Hydra: "missing EQUAL at '<EOF>'", naming no argument
        return (
            f"{', '.join(map(repr, stray))}: not key=value (a part of a path with a space, "
            "unquoted?); quote a value with spaces for the shell ('hydra.run.dir=/runs/my "
            "run'), and give each setting as key=value"
        )
    sweeping = bool({"--multirun", "-m"} & flags) or any(  # (Hydra's mode set as a value)
        a.partition("=")[::2] == ("hydra.mode", "MULTIRUN") for a in argv
    )
    paths = [a for a in argv if not a.startswith("-") and _unread_path(a, sweeping)]
    if paths:  # e.g. "Photos (1)": Hydra's parse error names no fix
        typed = " ".join(option(*a.split("=", 1), interpolations=True) for a in paths)
        return (
            f"{', '.join(paths)}: Hydra's override grammar reads a path holding a bracket, a "
            f"comma, '=', a quote, '#' or '&' only in a quoted value: write {typed} (the single "
            "quotes for the shell, the double ones for Hydra)"
        )
    named = [  # the run folder and log are named by them: no path separator
        a
        for a in argv
        if a.split("=", 1)[0].lstrip("+") in RUN_NAMES and _separated(a.split("=", 1)[1])
    ]
    if named:
        return (
            f"{named[0]}: {named[0].split('=', 1)[0].lstrip('+')} names the run folder and "
            "log: give it without '/'"
        )
    removed = [a for a in argv if a.split("=", 1)[0] in {f"~{n}" for n in RUN_NAMES}]
    if removed:  # (Hydra's traceback as it sets up the log, before mic's checks)
        what = removed[0].split("=", 1)[0][1:]
        return (
            f"{removed[0]}: {what} names the run's log file (and, with the default folders, "
            "its folder) and cannot be removed: give it another value"
        )
    unset = [  # read by Hydra's log set-up (the job's name) before mic's check of the config
        (a, var)
        for a in argv
        if a.split("=", 1)[0].lstrip("+").startswith(("method.name", "dataset.name", "hydra."))
        for var in re.findall(r"\$\{oc\.env:([^,}]+)\}", a.split("=", 1)[-1])
        if var.strip() not in os.environ
    ]
    if unset:
        arg, var = unset[0]
        return (
            f"{arg} reads the environment variable {var}, which is not set; set it (export "
            f"{var}=...), or give a default: ${{oc.env:{var},<default>}}"
        )
    shown = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--cfg", "-c")}
    if "hydra" in shown and "--resolve" in argv:  # the job's name reads the job's config
        return (
            "--cfg hydra --resolve: Hydra's config alone cannot be resolved (its job name "
            "reads the job's settings); give --cfg all --resolve"
        )
    own_mic = [
        a
        for a in argv
        if re.match(r"\+{1,2}method\.terms\.mic[.=]", a)
        and a.partition("=")[2].strip("'\" ") not in ("null", "None", "")
    ]
    if own_mic and any(
        re.fullmatch(r"mic=(['\"]?)none\1", a) for a in argv
    ):  # (the run was named as one with MIC, its loss as MIC's)
        return (
            f"{own_mic[0]}: with mic=none, a term of one's own named 'mic' would be logged and "
            "named as MIC (the run folder's _mic, loss/mic); give it another name "
            f"({own_mic[0].replace('method.terms.mic', 'method.terms.<name>', 1)})"
        )
    added = [a for a in argv if a.split("=", 1)[0] in ("+hydra.searchpath", "++hydra.searchpath")]
    if added:
        plain = added[0].lstrip("+")
        return (
            f"{added[0].split('=', 1)[0]} is ignored by Hydra, which reads the config search "
            f"path from hydra.searchpath= alone: write {plain}"
        )
    return None


def grammar_problem(argv: Sequence[str]) -> str | None:
    """The message for the first override that Hydra's grammar cannot read (a bracket left
    open, an '=' or ';' in an unquoted value: Hydra printed its parser's words, a link to
    another version's documentation and exit status 1); None if it reads them all. Asked
    after the checks of the settings' names (a misspelt key is named first)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in _split_options(argv)[1]:
        try:
            parser.parse_override(arg)
        except HydraException as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            value = arg.partition("=")[2]
            pairs = (
                "brackets, braces and quotes must pair up (a list: key=[1,2]; a mapping: "
                "key='{a: 1}'), and "
                if set(value) & set("[]{}'\"")
                else ""
            )
            return (
                f"{arg}: Hydra's override grammar cannot read it ({why}): {pairs}a value "
                "holding characters of the grammar ([ ] { } , = ; ( ) quotes and others) as text "
                "is quoted for Hydra inside the shell's quotes (key='\"a=b; c\"'; "
                "https://hydra.cc/docs/1.3/advanced/override_grammar/basic/)"
            )
    return None


def resolve_problem(argv: Sequence[str]) -> str | None:
    """The message for ``--cfg job --resolve`` (or ``all``) of a config that does not resolve
    (an unset ``oc.env``, a ``${key}`` it lacks), as the run itself would give it: Hydra
    printed its traceback. None otherwise, or where the config does not compose here (the
    run's checks name that)."""
    from mic.experiment import compose_config

    shown = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--cfg", "-c")}
    if "--resolve" not in argv or not shown & {"job", "all"} or {"-m", "--multirun"} & {*argv}:
        return None
    own = _config_dirs(argv)
    if own is None:
        return None
    overrides = [a for a in _split_options(argv)[1] if not a.startswith("hydra.")]
    try:
        composed = compose_config([*overrides, *_search_path(own)])
    except Exception:
        return None
    try:
        decode_env(composed)  # (an unset variable named as the run names it)
        OmegaConf.to_container(composed, resolve=True)
    except MicError as e:
        return str(e)
    except Exception as e:
        from mic.schema import missing_values

        return (
            missing_values(composed)  # (a ??? met by the resolution: OmegaConf's words)
            or user_error(e, composed)
            or f"the config does not resolve: {e}"
        )
    return None


def options_first(argv: Sequence[str]) -> list[str]:
    """``argv`` with Hydra's options (``--config-dir X``, ``-m``, ``--cfg job``) before the
    overrides, each group in its order: Hydra's argparse reads the overrides as one list, so
    ``iterations=2 --config-dir X experiment=mine`` ended in "unrecognized arguments:
    experiment=mine"."""
    options, overrides, last = _split_options(argv)
    return options + overrides + last


def _split_options(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``(options with their values, overrides, options that take no override)``."""
    from hydra._internal.utils import get_args_parser

    actions = {s: a for a in get_args_parser()._actions for s in a.option_strings}
    options: list[str] = []
    overrides: list[str] = []
    last: list[str] = []  # --info without a value: argparse would take an override for one
    rest = iter(argv)
    for arg in rest:
        action = actions.get(arg)  # (--config-dir=X is one word, as is an unknown option)
        if not arg.startswith("-"):
            overrides.append(arg)
        elif action is None or action.nargs == 0:
            options.append(arg)
        elif action.nargs == "?":
            value = next(rest, None)
            if value in (action.choices or ()):
                options += [arg, value]  # type: ignore[list-item]
            else:
                last.append(arg)
                overrides += [] if value is None else [value]
        else:
            options += [arg, *([v] if (v := next(rest, None)) is not None else [])]
    return options, overrides, last


def _separated(name: str) -> bool:
    """Whether a run name (``method.name``) holds a path separator outside interpolations
    (``mt_s${seed}`` is fine; ``a/b`` makes Hydra's log file a path that does not exist)."""
    return "/" in re.sub(r"\$\{[^}]*\}", "", str(name))


def _unread_path(arg: str, sweeping: bool) -> bool:
    """Whether ``arg`` gives an unquoted path (a value with a ``/``) that Hydra's override
    grammar refuses (``(``, ``[``, ``=``, ``'``, ``#``, ``&``) or, outside a sweep, reads as
    a sweep of several values (a ``,``)."""
    key, _, value = arg.partition("=")
    if not key or "/" not in value or _quoted(value) or value[:1] in "[{":
        return False
    override = _parsed(arg)
    if override is None:  # Hydra's OverrideParseException, or its lexer's
        return True
    function = re.match(r"\w+\(", value)  # a sweep function (choice, range, glob): Hydra's
    return override.is_sweep_override() and not sweeping and not function


def _quoted(value: str) -> bool:
    """Whether an override's value is one quoted string ('...' or "...")."""
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""


def unknown_option(argv: Sequence[str]) -> str | None:
    """The message for the first override that names nothing of mic's config, with the
    closest names: an option of a config group that does not exist (``experiment=det_shapez``,
    with the list), a list of a group's options (``method=[dacs,mean_teacher]``, which Hydra
    would merge into one config), or a root setting that does not exist
    (``learning_rate=0.1``; Hydra's own message would advise adding it with ``+``, which adds
    a setting that nothing reads;
    ``mic.ratio=0.5``: MIC's settings are under ``method.terms.mic``). Config folders of
    one's own (``--config-dir``, ``hydra.searchpath``) are searched beside mic's, and one that
    does not exist is named; a chosen config file (each of a sweep's, ``method=a,b``) that
    would not compose as meant is named (``_chosen_file_problem``). None when every override
    names something (a sweep's unknown options are Hydra's to name), or when the command line
    brings configs in another way (``pkg://`` search paths, ``--config-path``: then Hydra
    judges)."""
    from mic.schema import ROOT_KEYS, USER_KEY, mic_settings

    own = _config_dirs(argv)
    if own is None or any(a.startswith(("--config-path", "-cp")) for a in argv):
        return None
    for folder in own:
        if not folder.is_dir():
            return (
                f"config folder {folder} (--config-dir / hydra.searchpath): no such folder "
                f"(from {Path.cwd()}); give the folder that holds your config groups (e.g. "
                "experiment/my_run.yaml)"
            )
    shadowed = _shadowed_configs(own)
    if shadowed:
        return shadowed
    confs: list[Any] = [importlib.resources.files("mic.conf"), *own]
    sweep = {"-m", "--multirun"} & set(argv) or "hydra.mode=MULTIRUN" in argv
    for arg in argv:
        deleted = re.fullmatch(r"~([A-Za-z_]\w*)(?:=.*)?", arg)
        again = deleted and (f"+{deleted.group(1)}=", f"++{deleted.group(1)}=")
        readded = again and any(a.startswith(again) for a in argv)  # (~lr_mult +lr_mult={...})
        if readded and deleted.group(1) in NAMED_GROUPS:  # (~task +task={...}: Hydra's raw
            group = deleted.group(1)  # error)
            value = next(a for a in argv if a.startswith(again)).split("=", 1)[1]
            if not value.lstrip().startswith("{"):  # an option: chosen as it is
                return f"~{group} +{group}={value}: choose the option directly: {group}={value}"
            return _named_group_problem(f"~{group}", group)
        if deleted and not readded:  # a whole group or root setting (Hydra's traceback, or the
            problem = _deletion_problem(deleted.group(1), confs)  # whole config) not given anew
            if problem:
                return problem
        nested = re.fullmatch(r"\+{0,2}([A-Za-z_]\w*)/(\w+)=(.*)", arg)
        if nested and any((c / nested[1]).is_dir() for c in confs):
            group, part, option = nested.groups()
            if group in _PART_GROUPS:
                return _PART_GROUPS[group]
            if not any((c / group / part).is_dir() for c in confs):  # (Hydra's own words)
                return _nested_group_problem(arg, group, part, option, confs)
        found = re.fullmatch(r"(\+{0,2})([A-Za-z_]\w*)((?:\.\w+)*)=(.*)", arg)
        if not found:
            continue
        plus, key, rest, value = found.groups()
        folders = [c / key for c in confs if (c / key).is_dir()]
        if key in _PART_GROUPS and not rest:  # Hydra's "Could not override", then a dead end
            return _PART_GROUPS[key]
        if folders and not rest:  # a group's option (or a sweep's: a,b)
            if "null" in value.split(","):  # Hydra: "Config group override must be a string"
                names = _folder_options(folders)
                off = " (mic=none switches MIC off)" if key == "mic" else ""
                if key == "experiment":  # the default: none
                    off = " (leave experiment= out for none, the default; a sweep names it none)"
                return f"{key}=null: choose one of its options{off}: {', '.join(names)}"
            listed = re.fullmatch(r"\[(.*)\]", value)
            if listed and _is_group(key):  # one of mic's groups: one option (Hydra merges
                # those listed; a group of one's own may be meant so)
                names = [n.strip() for n in listed.group(1).split(",") if n.strip()]
                if len(names) < 2:
                    one = f"{key}={names[0]}" if names else ", ".join(_folder_options(folders))
                    return f"{key}={value}: {key} takes one option, without brackets: {one}"
                return (
                    f"{key}={value} chooses several {key} options at once, which Hydra would "
                    f"merge into one config: choose one ({key}={names[0]}), or run each in turn "
                    f"(a sweep: mic-train -m {key}={','.join(names)})"
                )
            if not re.fullmatch(r"[\w.-]+(,[\w.-]+)*", value):
                continue
            options = value.split(",")
            if len(options) > 1 and not sweep and _is_group(key):  # (Hydra: "Ambiguous value")
                return (
                    f"{key}={value} names several {key} options: run each in turn with -m "
                    f"(mic-train -m {key}={value}), or choose one ({key}={options[0]})"
                )
            part = next((o for o in options if o.startswith("_")), None)
            if part is not None:  # composed, it ended in another option's message
                names = _folder_options(folders)
                return (
                    f"{key}={value}: {key}/{part}.yaml holds parts of other {key} configs, "
                    f"not an option of its own: choose one of {', '.join(names)}"
                )
            for option in options:  # each chosen file, a sweep's too
                found = [f / f"{option}.yaml" for f in folders if (f / f"{option}.yaml").is_file()]
                problem = _chosen_file_problem(found[0], key, confs) if found else None
                if problem:
                    return problem
            if len(options) > 1:  # a sweep: each option named (Hydra's words: a search path)
                missing = [
                    o for o in options if not any((f / f"{o}.yaml").is_file() for f in folders)
                ]
                if missing:
                    return f"{key}={value}: " + _unknown_option(key, missing[0], folders)
                continue
            if found:
                continue
            deep = [f for f in own if (f / f"{value}.yaml").is_file() and f.name == key]
            if deep:  # --config-dir my_conf/method: one level too deep
                return (
                    f"unknown {key} {value!r}: your config folder {deep[0]} holds {value}.yaml "
                    f"itself; give the folder that holds {key}/ (--config-dir {deep[0].parent})"
                )
            message = _unknown_option(key, value, folders)
            own_file = (
                ""
                if own or "Did you mean" in message  # (a typo of one of mic's)
                else f" (a file of your own: give the folder that holds {key}/{value}.yaml with "
                "--config-dir)"
            )
            return message + own_file
        if key == "mic" and rest:  # the group chooses MIC's config; its keys live elsewhere
            return f"no setting {key}{rest}: {mic_settings(rest)}"
        if plus or key in (*ROOT_KEYS, USER_KEY, "hydra") or folders:
            continue  # an addition (checked once composed: mic.schema.unread_keys), or known
        hint = did_you_mean(key, sorted(ROOT_KEYS)) or " `mic-train --cfg job` lists them all."
        return f"mic-train has no setting {key!r}.{hint}"
    return None


def _named_group_problem(given: str, group: str) -> str:
    """The message for replacing ``group`` (one of ``NAMED_GROUPS``) on the command line."""
    why = (
        f"{given}: the root config's defaults read the name of the {group} option "
        f"(${{method}}_${{task}}, ${{mic}}_${{task}}), so the {group} config cannot be replaced "
        "on the command line: "
    )
    if group == "mic":  # (its package is method.terms.mic)
        return why + (
            "add a mic option of your own (mic/<name>.yaml in a --config-dir folder, chosen "
            "with mic=<name>; mic=none switches MIC off)"
        )
    return why + (
        f"replace it in an experiment file of yours (its defaults: - override /{group}: null; "
        f"then {group}: with its settings), or add a {group} option of your own "
        "(docs/new_task.md)"
    )


def _deletion_problem(key: str, confs: Sequence[Any]) -> str | None:
    """The message for ``~key`` deleting a config group or a root setting that every run
    composes or reads (``~mic``, ``~seed``), with what to give instead; None for others."""
    from mic.schema import ROOT_KEYS

    if key in _PART_GROUPS:
        return _PART_GROUPS[key]
    folders = [c / key for c in confs if (c / key).is_dir()]
    if folders and key != "experiment":  # (the default experiment is none)
        names = _folder_options(folders)
        off = " (mic=none switches MIC off)" if key == "mic" else ""
        return (
            f"~{key} deletes the config group {key}, which every run composes: choose one of "
            f"its options instead{off}: {', '.join(names)}"
        )
    if key in ROOT_KEYS:
        return (
            f"~{key} deletes the setting {key}, which every run reads: set it instead ({key}=...)"
        )
    return None


def unknown_setting(argv: Sequence[str]) -> str | None:
    """The message for the first override ``a.b.c=value`` (without ``+``) whose key the
    composed config does not have (``dataset.sourc.length=8``), with the closest names of its
    level; Hydra's own message would advise adding it with ``+``, which adds a setting that
    nothing may read. For a level that builds an object (``_target_``) the message says how
    to add an argument of its constructor that the config does not list. None when every such
    key exists, or when the config cannot be composed here (a sweep, a bad option): then the
    run itself judges.

    The config is composed once, with the command line's group choices (and its config
    folders) but without the overrides checked; a setting added with ``+`` that the config
    already has is named too (Hydra's "could not append"). Where that config holds a model, data
    set or loss term of another task (``model=small_unet`` in a detection command), that is
    the message: the settings of the right one would not be found on it.
    """
    from mic.experiment import compose_config
    from mic.schema import USER_KEY, _argument_names, interpolated_paths, task_mismatches

    dotted, kept, deleted = [], [], []
    appended: dict[str, str] = {}  # +key=value: key -> value as written
    anew: dict[str, str] = {}  # group -> the mapping +group={...} gives it (a config of one's own)
    given: dict[str, str] = {}  # a dotted key's value as written
    mappings = {}  # key -> a mapping given to it (merged by Hydra into what it holds)
    for arg in argv:
        if re.fullmatch(r"\+{0,2}experiment=\s*\{.*", arg, re.S):  # (any of its three forms)
            return (
                f"{arg}: experiment= chooses an experiment file, which holds settings; give "
                "the settings themselves (iterations=5), or write them in an experiment file "
                "of yours (docs/training.md)"
            )
        mapping = re.fullmatch(r"([A-Za-z_][\w.]*)=\s*(\{.*)", arg, re.S)
        if mapping and not mapping.group(1).startswith(("hydra", USER_KEY)):
            mappings[mapping.group(1)] = mapping.group(2)
        found = re.fullmatch(r"([A-Za-z_]\w*)((?:\.\w+)+)=(.*)", arg)
        added = re.fullmatch(r"\+([A-Za-z_]\w*(?:\.\w+)*)=(.*)", arg)  # (+iterations too)
        dropped = re.fullmatch(r"~([A-Za-z_]\w*(?:\.\w+)*)(=.*)?", arg)
        if found and found.group(1) not in ("hydra", USER_KEY):
            dotted.append(found.group(1) + found.group(2))
            given[dotted[-1]] = found.group(3)
        elif added and not added.group(1).startswith(("hydra", f"{USER_KEY}")):
            name = added.group(1)
            if "." not in name and name in _chosen_groups():
                if added.group(2).startswith("{"):  # a config of one's own for the group
                    anew[name] = added.group(2)
                    continue
                return (  # (Hydra: "Multiple values")
                    f"+{name}=... adds a second {name} choice, but the config's defaults hold "
                    f"one already: choose it without +: {name}={added.group(2)}"
                )
            if "." in name or not _is_group(name):  # (+method_task=x: named by the run)
                appended[name] = added.group(2)  # judged on the config without it
        elif dropped and not dropped.group(1).startswith(("hydra", USER_KEY)):
            deleted.append(dropped.group(1))  # composed without it (~key then +key=...)
            kept.append(arg)
        elif "=" in arg and not arg.startswith(("-", "hydra.")) and not mapping:
            kept.append(arg)
    # groups given anew without ~group: judged once composed (null there, or merged into)
    replaced = [name for name in anew if f"~{name}" not in argv]
    own = _config_dirs(argv)
    if not (dotted or appended or deleted or mappings or replaced) or own is None:
        return None
    kept += _search_path(own)
    try:
        composed = compose_config(kept)
    except Exception:  # a sweep, a bad choice or a deletion of a key that is not there
        try:  # the last is named below, with the closest names of its level
            composed = compose_config([a for a in kept if not a.startswith("~")])
        except Exception:  # a sweep or a bad choice: the run reports it
            return None
        for key in deleted:  # a null one (Hydra: "Could not delete ... does not exist")
            base = [a for a in kept if a[:1] != "~" and a.lstrip("+").split("=")[0] != key]
            try:  # (its value before the command line sets it anew)
                value = OmegaConf.select(compose_config(base), key, default=_ABSENT)
            except Exception:
                continue
            if value is None:
                return (
                    f"~{key}: {key} is null here (nothing set), which Hydra cannot delete; set "
                    f"it directly ({key}=...)"
                )
        dotted = deleted
    tree = OmegaConf.to_container(composed, resolve=False)
    for key, value in mappings.items():
        node = OmegaConf.select(composed, key, default=None, throw_on_resolution_failure=False)
        problem = _merged_mapping(key, value, node)
        if problem:
            return problem
    for name in replaced:  # (a group an experiment sets to null takes it as it is)
        if composed.get(name) is not None and name in NAMED_GROUPS:
            return _named_group_problem(f"+{name}={{...}}", name)
        if composed.get(name) is not None:
            return (
                f"+{name}={{...}} merges its settings into the {name} config the run composes "
                f"(with that one's own: {', '.join(map(str, composed[name]))}): to build yours "
                f"alone, replace it: ~{name} '+{name}={{_target_: ..., ...}}'"
            )
    for key in appended:
        value = OmegaConf.select(composed, key, default=_ABSENT)
        if value is not _ABSENT:
            return (
                f"+{key}=... adds a setting, but {key} is already set (to {value!r}); set it "
                f"without +: {key}={appended[key]}"
            )
    for key in dotted:
        if any(key == a or key.startswith(f"{a}.") for a in appended):
            continue  # added on the same command line
        group, _, rest = key.partition(".")
        if group in anew and not rest:  # (the group deleted and given anew)
            continue
        if group in anew:  # (its settings are the mapping's, not the composed config's)
            override = _parsed(f"{group}={anew[group]}")
            mapping = override.value() if override is not None else None
            first = rest.split(".")[0]
            if isinstance(mapping, dict) and first not in mapping:
                return (
                    f"no setting {key}: the {group} given anew (+{group}={{...}}) has no "
                    f"{first!r}; add it to that mapping, or with +{group}.{rest}=..."
                )
            continue
        node: Any = tree
        above: Any = None  # the level that holds node
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if isinstance(node, list) and part.isdigit():
                node = node[int(part)] if int(part) < len(node) else None
                continue
            where = ".".join(parts[:depth])
            typed = any(where == k or where.startswith(f"{k}.") for k in [*given, *appended])
            if node is None and depth and not typed:  # (Hydra: "Key ... is not in struct")
                return (
                    f"no setting {key}: {where} is null in this config (none is used), so it "
                    f"has no settings; to use one, set {where} itself ({where}={{...}})"
                )
            if not isinstance(node, dict):
                break  # a value (or an interpolation) with settings below: Hydra judges
            if part not in node and any(a.startswith(f"{where}.{part}.") for a in appended):
                return (  # (+model.opts.MODEL.X=1 model.opts.MODEL.Y=2: MODEL is added here)
                    f"no setting {key}: {where}.{part} is added on this command line (with +), "
                    f"so a key below it is added with + too: +{key}=..."
                )
            if part not in node:
                where = ".".join(parts[:depth]) or "the config"
                names = sorted(str(k) for k in node if not str(k).startswith("_"))
                target = node.get("_target_")
                arguments = (_argument_names(str(target)) or set()) if target else set()
                named = part in arguments
                # (the name is right; else a typo of a setting or of an argument not listed)
                hint = "" if named else did_you_mean(part, sorted({*names, *arguments}))
                if named:  # (said before the list of its settings, which may be long)
                    hint = (
                        f" {target} takes {part}, but the config does not list it: add it "
                        f"with +{key}=..."
                    )
                    add = ""
                elif target is not None and not hint and _taken(target, part):  # (**kwargs)
                    add = (
                        f" An argument of {target} that the config does not list is added "
                        f"with +{key}=..."
                    )
                else:
                    add = ""
                rest = ".".join(parts[1:])
                others = [] if hint or depth == 0 else _options_setting(parts[0], rest)
                if others and not add:  # (a setting of another option: optimizer.momentum)
                    add = (
                        f" The {parts[0]} options that set it: "
                        f"{', '.join(f'{parts[0]}={o}' for o in others)}"
                    )
                mismatches = task_mismatches(composed)  # the cause: a model of another task
                if mismatches:
                    return f"{'; '.join(mismatches)} ({key} is no setting of it)"
                if key in interpolated_paths(composed)[0]:  # ${oc.select:dataset.mic_block_size,32}
                    return (
                        f"no setting {key} in this config, but an interpolation reads it where "
                        f"it is set: add it with +{key}=..."
                    )
                if where == "method.terms.mic" and not names:  # mic=none leaves it empty
                    return (
                        f"no setting {key}: MIC is switched off (mic=none), so it has no "
                        "settings; drop mic=none to set them"
                    )
                if target is None and not names and depth and not add:  # (model.opts: {})
                    add = f" It holds keys of one's own: add one with +{key}=..."
                return (
                    f"no setting {key}: {where} has no {part!r}.{hint} Its settings: "
                    f"{', '.join(names) or 'none'}.{add}"
                )
            above, node = node, node[part]
        else:
            problem = _section_given_a_value(key, given.get(key), node, above)
            if problem:
                return problem
    return None


def experiment_over_choice(argv: Sequence[str]) -> str | None:
    """The message for a config group's option chosen on the command line (``model=small_cnn``)
    beside an experiment that chooses another one and sets settings of it in its own body:
    a setting the chosen option lacks (``method.step`` of SAM over ``method=cdan``, Adam given
    SGD's ``momentum``), which the run would pass to it; for a model, a setting it has
    (``model.backbone: vit_base_...`` over ``model=small_cnn``: a ViT-B/16 built where a small
    CNN was asked for); for any option, a setting the option reads from a setting of the
    user's (``transform.scale: ${dataset.scale}`` of ``dataset=seg_folders``, which an HRDA
    recipe's GTA5 resize would replace: ``dataset.scale`` read by nothing). A value the
    experiment tunes over another option (its learning rate over ``optimizer=sgd``, its crops
    over one's own data set) is its recipe's and passes; settings given on the command line
    too are the user's; a null for a setting the option lacks (a term switched off) changes
    nothing. Each combination of a sweep's options and experiments is judged. None where there
    is no such setting, no experiment and option both chosen, or the configs cannot be read
    here (the run reports that)."""
    chosen: dict[str, list[str]] = {}
    experiments: list[str] = []
    for arg in argv:
        key = re.fullmatch(r"([A-Za-z_]\w*)=.+", arg)
        options = _options_given(arg) if key and _is_group(key.group(1)) else []
        if options and key.group(1) == "experiment":  # type: ignore[union-attr]
            experiments = options
        elif options:
            chosen[key.group(1)] = options  # type: ignore[union-attr]
    own = _config_dirs(argv)
    if not (chosen and experiments) or own is None:
        return None
    given = [a.lstrip("+~").split("=", 1)[0] for a in argv]  # settings (not group choices)
    given = [g for g in given if g not in chosen and g != "experiment"]
    given += _mapping_keys(argv)  # (model={backbone: x} sets model.backbone)
    for experiment in experiments:
        combinations = itertools.product(*([(g, o) for o in o_] for g, o_ in chosen.items()))
        for picks in itertools.islice(combinations, 64):  # (a sweep's first 64: each composed)
            try:
                problem = _over_choice(experiment, dict(picks), given, own)
            except Exception:  # (a config of one's own this cannot read: the run judges)
                continue
            if problem:
                return problem
    return None


def own_config_problem(argv: Sequence[str]) -> str | None:
    """The message for a config file of one's own (``--config-dir``) that Hydra cannot merge
    because it gives a list where mic's config holds a mapping (``optimizer:`` followed by
    ``- lr: 0.1``), naming the file and the key (Hydra's words name neither key nor fix, and
    exit 1); None otherwise, and for a sweep or a command line without config folders of
    one's own (mic's files are tested)."""
    from mic.experiment import compose_config

    own = _config_dirs(argv)
    if not own or len(own) > 1 or {"-m", "--multirun"} & set(argv):
        return None
    if _other_root_or_launcher(argv):
        return None
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    overrides = [a for a in overrides if not a.lstrip("+~").startswith("hydra.")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compose_config(overrides, config_dir=own[0])
        return None
    except Exception as e:
        said = str(e)
    merged = re.match(r"In '([\w/.-]+)': ConfigTypeError .*\nCannot merge (\w+) with (\w+)", said)
    if not merged:
        return None
    name = merged.group(1)
    file = own[0] / f"{name}.yaml"
    mapping = OmegaConf.to_container(compose_config([]), resolve=False)
    keys = []
    if file.is_file():
        text = OmegaConf.to_container(OmegaConf.load(file), resolve=False)

        def walk(node: Any, base: Any, path: str) -> None:
            for key, value in node.items() if isinstance(node, dict) else []:
                there = base.get(key) if isinstance(base, dict) else None
                if isinstance(value, list) and isinstance(there, dict):
                    keys.append(f"{path}{key}")
                elif isinstance(value, dict):
                    walk(value, there, f"{path}{key}.")

        group = name.split("/")[0]  # (a group's file holds its section's keys)
        base = mapping if group == "experiment" else mapping.get(group)
        walk(text, base, "" if group == "experiment" else f"{group}.")
    where = f" ({', '.join(keys)}: a mapping in mic's config)" if keys else ""
    groups = [k for k in keys if "." not in k and _is_group(k)]
    article = "an" if groups and groups[0][0] in "aeiou" else "a"
    choose = (
        f"; to choose {article} {groups[0]} option, list `- override /{groups[0]}: <option>` "
        "in its defaults"
        if groups
        else ""
    )
    return (
        f"{file if file.is_file() else name} gives a list where the config holds a mapping"
        f"{where}, which Hydra cannot merge: write its settings as `key: value` lines "
        f"below it, not as `- ` items{choose}"
    )


#: the most jobs' configs composed to judge a sweep's values before its first job
SWEEP_VALUES_JUDGED = 32


def run_name_problem(argv: Sequence[str]) -> str | None:
    """The message for what Hydra meets setting up the job's log, before mic's checks, with a
    traceback: an interpolation in what names the run's folder or log
    (``hydra.run.dir=runs/${nope}``, ``method.name=${nope}``) of a key that the composed config
    lacks, or a log file name (``<dataset.name>_<method.name>_mic.log``, or
    ``<hydra.job.name>.log``) over 255 bytes (from the command line or a config file of one's
    own). None where neither is given, for a sweep (each job's own), for Hydra's own keys and
    resolvers (``${now:...}``, ``${hydra.job.name}``), or where the config does not compose
    here (the run reports that)."""
    from mic.experiment import compose_config

    keys = (*RUN_NAMES, "hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")
    named = [a for a in argv if a.split("=", 1)[0].lstrip("+") in keys and "${" in a]
    given = [a for a in argv if a.split("=", 1)[0].lstrip("+") in RUN_NAMES]
    own = _config_dirs(argv)  # (mic's own names are short: composed only where needed)
    if not (named or given or own) or {"-m", "--multirun"} & set(argv):
        return None
    if _other_root_or_launcher(argv):
        return None
    settings = _job_settings(argv)
    if own is None or len(own) > 1:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = compose_config(settings, config_dir=own[0] if own else None)
    except Exception:  # (what does not compose: the run's to report)
        return None
    try:
        said, log = _run_name_message(cfg, named, given)
    except Exception as e:  # (Hydra's traceback as it names the log)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"the run's name ({', '.join(given) or 'its folder'}) does not resolve: {first}"
    if said:
        return said
    if len(log.encode()) > 255:  # (NAME_MAX: Hydra's "Unable to configure handler 'file'")
        job = any(a.split("=", 1)[0].lstrip("+") == RUN_NAMES[2] for a in given)
        return (
            f"the run's log file would be named {log[:60]}...{log[-20:]}, {len(log.encode())} "
            f"bytes, more than a file name may hold (255): shorten "
            f"{'hydra.job.name' if job else 'method.name or dataset.name'}"
        )
    return None


def _run_name_message(cfg: DictConfig, named: list[str], given: list[str]) -> tuple[str, str]:
    """``run_name_problem``'s message for an interpolation that names the run ("" where there
    is none) and the name of the run's log file, as Hydra makes it (conf/config.yaml's
    ``hydra.job.name``).

    Raises:
        Exception: what does not resolve here (the run's to name).
    """
    for arg in named:
        for key in re.findall(r"\$\{([A-Za-z_][\w.]*)\}", arg.split("=", 1)[1]):
            parent, _, last = key.rpartition(".")
            node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
            if key.startswith("hydra.") or not OmegaConf.is_dict(node):
                continue
            if last not in list(node):  # (`in node` is False for a value not given: ???)
                close = did_you_mean(key, _leaf_keys(cfg), n=3)
                said = (
                    f"{arg}: ${{{key}}} names no setting of the run's config, which Hydra reads "
                    f"to name the run (its folder or log).{close}"
                )
                return said, ""
            if OmegaConf.is_missing(node, last):
                said = (
                    f"{arg}: ${{{key}}} reads {key}, a value that must be given and is not: "
                    f"give it ({key}=...)"
                )
                return said, ""
    job = [a.split("=", 1)[1] for a in given if a.split("=", 1)[0].lstrip("+") == RUN_NAMES[2]]
    name = job[-1] if job else (
        "${dataset.name}_${method.name}${mic.run_suffix:${oc.select:method.terms.mic._target_,null}}"
    )  # fmt: skip
    with open_dict(cfg):
        cfg._mic_job_name = name
        return "", f"{cfg._mic_job_name}.log"


def _job_settings(argv: Sequence[str]) -> list[str]:
    """The overrides of a command line that compose the job's config: settings, additions and
    deletions, without Hydra's options and ``hydra.*`` keys."""
    settings = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    return [a for a in settings if not a.lstrip("+~").startswith("hydra.")]


def _leaf_keys(cfg: Any, prefix: str = "") -> list[str]:
    """The dotted keys of ``cfg``'s settings (for did-you-mean advice)."""
    keys = []
    for key in cfg if OmegaConf.is_dict(cfg) else []:
        path = f"{prefix}.{key}" if prefix else str(key)
        keys.append(path)
        if OmegaConf.is_dict(cfg._get_node(key)):
            keys += _leaf_keys(cfg[key], path)
    return keys


def sweep_value_problem(argv: Sequence[str]) -> str | None:
    """The message for a value of a sweep (``-m seed=0,abc``) that its job would refuse, or
    None: each value is judged with every other sweep at its first value (up to
    ``SWEEP_VALUES_JUDGED`` jobs' configs), by the checks a run makes of its config and its
    method's settings before any data is read, so that a typo in the last value of a long
    sweep is named before the first job trains (it was named when that job began, hours
    later). Values the checks cannot judge here are the run's to judge."""
    import torch
    from hydra.core.override_parser.types import Glob, IntervalSweep

    from mic.experiment import build_method, compose_config
    from mic.schema import check_config

    if not {"-m", "--multirun"} & set(argv):
        return None
    own = _config_dirs(argv)
    if own is None or len(own) > 1 or _other_root_or_launcher(argv):
        return None
    settings = _job_settings(argv)
    experiments = [o for a in settings if a.startswith("experiment=") for o in _options_given(a)]
    if any(_sets_sweeper(e, own) for e in experiments):  # (its own sweeps join each job)
        return None
    parsed = [_parsed(a) for a in settings]
    sweeps: dict[int, list[str]] = {}
    for i, override in enumerate(parsed):
        if override is not None and override.is_sweep_override():
            if isinstance(override.value(), Glob):  # (0 jobs, exit 0: a typo looked a success)
                group = override.key_or_group
                if not own and _is_group(group) and not _options_given(settings[i]):
                    names = _folder_options([importlib.resources.files("mic.conf") / group])
                    return (
                        f"{settings[i]} matches no option of {group}, so the sweep would run "
                        f"no job; its options: {', '.join(names)}"
                    )
                return None  # (its options are the run's to list)
            if isinstance(override.value(), IntervalSweep):  # (Hydra's traceback)
                return (
                    f"{settings[i]}: interval() is a range of real numbers that a sampling "
                    "sweeper draws from (hydra/sweeper=optuna, a Hydra plugin); Hydra's basic "
                    "sweeper, mic-train's, runs lists of values: a,b,c or range(start, stop, "
                    "step)"
                )
            try:
                sweeps[i] = list(itertools.islice(override.sweep_string_iterator(), 1000))
            except Exception:  # (Hydra's to name)
                return None
            if not sweeps[i]:  # (Hydra launched 0 jobs and exited 0: a typo looked a success)
                return f"{settings[i]} sweeps no value, so the sweep would run no job"
    if not sweeps:
        return None
    first = list(settings)
    for i, values in sweeps.items():
        first[i] = f"{parsed[i].get_key_element()}={values[0]}" if values else settings[i]
    named = " ".join(first[i] for i in sweeps)
    jobs = [(first, f"the sweep's first job ({named})")] + [
        (
            [*first[:i], f"{parsed[i].get_key_element()}={value}", *first[i + 1 :]],
            f"the sweep's job with {parsed[i].get_key_element()}={value}",
        )
        for i, values in sweeps.items()
        for value in values[1:]
    ]
    for job, which in jobs[:SWEEP_VALUES_JUDGED]:
        try:
            with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
                warnings.simplefilter("ignore")
                cfg = compose_config(job, config_dir=own[0] if own else None)
                check_config(cfg)
                build_method(cfg)
        except MicError as e:
            if "environment variable" in str(e):  # (set where the job runs, maybe not here)
                return None
            return f"{which} would stop: {e}"
        except Exception:  # (what the checks cannot read here: the run judges, but a key
            said = None if own else unknown_setting(job)  # of none: Hydra's advice of +)
            if said:
                return f"{which} would stop: {said}"
            continue
    return None


def _experiment_path(name: str, own: Sequence[Path]) -> Any:
    """The file of experiment ``name`` (``x``, ``/experiment/x``): one's own config folders'
    or mic's, else None."""
    folders = [
        importlib.resources.files("mic.conf") / "experiment",
        *(d / "experiment" for d in own),
    ]
    name = name.removeprefix("/").removeprefix("experiment/")
    return next((f / f"{name}.yaml" for f in folders if (f / f"{name}.yaml").is_file()), None)


def _sets_sweeper(name: str, own: Sequence[Path], _seen: frozenset | set = frozenset()) -> bool:
    """Whether experiment ``name``'s file, or one it builds on, sets ``hydra.sweeper`` (its
    ``params`` add sweeps of its own to a command line's)."""
    path = _experiment_path(name, own)
    if path is None or name in _seen:
        return False
    try:
        raw = OmegaConf.to_container(OmegaConf.create(path.read_text()), resolve=False)
    except Exception:
        return False
    if not isinstance(raw, dict):
        return False
    if isinstance(raw.get("hydra"), dict) and raw["hydra"].get("sweeper") is not None:
        return True
    bases = [e for e in raw.get("defaults") or [] if isinstance(e, str) and e != "_self_"]
    return any(_sets_sweeper(b, own, {*_seen, name}) for b in bases)


def _other_root_or_launcher(argv: Sequence[str]) -> bool:
    """Whether a command line composes another root config (``--config-name``,
    ``--config-path``) or runs its jobs with another launcher or sweeper (their jobs may run
    elsewhere, with other variables, or be chosen otherwise): the checks here compose mic's
    root config and judge the jobs Hydra's basic sweeper makes."""
    names = ("--config-name", "-cn", "--config-path", "-cp", "hydra/launcher", "hydra/sweeper")
    return any(a.lstrip("+").split("=")[0] in names for a in argv)


def _parsed(arg: str) -> Any:
    """``arg`` as Hydra's override parser reads it (an ``Override``), or None where it does
    not parse (Hydra's to name)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
    except Exception:
        return None
    return override


def _options_given(arg: str) -> list[str]:
    """The options a group override ``group=...`` chooses, as Hydra reads it: one (quoted or
    not), a sweep's list (``a,b``), ``choice(a,b)``, ``glob(res*)`` over the group's files;
    none where it cannot tell."""
    from hydra.core.override_parser.types import Glob

    override = _parsed(arg)
    if override is None:
        return []
    value = override.value()
    if isinstance(value, Glob):
        folder = importlib.resources.files("mic.conf") / override.key_or_group
        names = [p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")]
        return value.filter(sorted(n for n in names if not n.startswith("_")))
    if override.is_sweep_override():
        try:
            return [str(v) for v in override.sweep_string_iterator()]
        except Exception:  # (a range of numbers: no group's)
            return []
    return [str(value)] if isinstance(value, str) else []


def _over_choice(
    experiment: str, chosen: dict[str, str], given: list[str], own: Sequence[Path]
) -> str | None:
    """``experiment_over_choice`` for one experiment and one option of each group."""
    from mic.experiment import compose_config

    try:
        settings, choices = _experiment_file(experiment, own)
    except Exception:  # a file that does not read: the run reports it
        return None
    search = _search_path(own)
    own_picks = {**_root_choices(), **choices}  # the options the experiment runs with
    picks = {**own_picks, **chosen}  # the experiment's, but the user's
    for group, picked in chosen.items():
        if own_picks.get(group) == picked:  # the experiment's own
            continue
        package = _package_of(group, picked, own)
        mine = {
            k: v for k, v in settings.items()
            if k.startswith(f"{package}.") and not k.endswith(".name")  # (a name: a label)
            and not any(k == g or k.startswith(f"{g}.") or g.startswith(f"{k}.") for g in given)
        }  # fmt: skip
        if not mine:
            continue
        try:
            alone = compose_config([*(f"{g}={o}" for g, o in picks.items()), *search])
        except Exception:
            continue
        tree = OmegaConf.to_container(alone, resolve=False)
        base: Any = None  # the experiment's own options' config, read where needed
        changed = []
        for key, value in mine.items():
            node: Any = tree
            parts = key.split(".")
            for depth, part in enumerate(parts):
                node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
                if node is _ABSENT:  # the level the option lacks: deleted whole
                    lacking = ".".join(parts[: depth + 1])
                    break
            absent = node is _ABSENT
            foreign = absent and value is not None and not _takes(tree, package, key)
            recipe = group in _RECIPE_GROUPS  # (its values are the experiment's to tune)
            routed = isinstance(node, str) and node.startswith("${") and node != value
            if routed:  # unless the experiment's own option reads it so too (a tuned tau)
                if base is None:
                    base = OmegaConf.to_container(
                        compose_config([*(f"{g}={o}" for g, o in own_picks.items()), *search]),
                        resolve=False,
                    )
                routed = _at(base, key) != node
            built = group == "model" and parts[-1] in _MODEL_IDENTITY  # (a ViT for a CNN)
            if (foreign and not recipe) or routed or (not absent and node != value and built):
                changed.append((key, value, node, lacking if absent else key))
        if changed and group == "model":  # (then its weights, which the new model lacks)
            changed += [
                (k, v, _at(tree, k), k)
                for k, v in mine.items()
                if k.split(".")[-1] == "pretrained" and _at(tree, k) not in (_ABSENT, v)
            ]
        if changed:
            shown = lambda o: "no such setting" if o is _ABSENT else f"{o!r:.60}"  # noqa: E731
            said = "; ".join(
                f"{k}={v!r:.60} (the option's: {shown(o)})" for k, v, o, _ in changed[:3]
            )
            fixes = [  # (the option's: its own value, where it reads a setting of the user's)
                f"{k}='{o}'" if isinstance(o, str) and o.startswith("${") else f"{k}=..."
                for k, _, o, _ in changed
                if o is not _ABSENT
            ]
            fixes += dict.fromkeys(f"~{at}" for _, _, o, at in changed if o is _ABSENT)
            return (
                f"experiment={experiment} sets {said} over {group}={picked}, so the run would "
                f"not build {group}={picked} as chosen: set or remove them on the command line "
                f"({' '.join(fixes[:4])}), or leave {group}= out"
            )
    return None


def _root_choices() -> dict[str, str]:
    """The option of each config group that mic's root config chooses (``model: small_cnn``),
    which an experiment without a choice of its own keeps."""
    return {k: v for k, v in _root_defaults() if "@" not in k and isinstance(v, str)}


def _mapping_keys(argv: Sequence[str]) -> list[str]:
    """The settings that mappings given on the command line set (``model={backbone: x}``:
    ``model.backbone``)."""
    keys = []
    for arg in argv:
        found = re.fullmatch(r"\+{0,2}([A-Za-z_][\w.]*)=\s*\{.*", arg, re.S)
        if not found or (override := _parsed(arg)) is None:
            continue
        mapping = override.value()
        if isinstance(mapping, dict):
            keys += [f"{found.group(1)}.{k}" for k in mapping]
    return keys


def _takes(tree: dict[str, Any], package: str, key: str) -> bool:
    """Whether ``key``, a setting directly under ``package`` that the option's config does not
    list, is an argument of the object it builds (Adam's ``weight_decay``, not its
    ``momentum``): it then passes as a value the experiment tunes."""
    from hydra.utils import get_object

    node = _at(tree, package)
    rest = key[len(package) + 1 :]
    target = node.get("_target_") if isinstance(node, dict) and "." not in rest else None
    if not isinstance(target, str):
        return False
    try:
        parameters = inspect.signature(get_object(str(target))).parameters
    except Exception:  # no target, or none importable here: not taken
        return False
    variadic = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return rest in parameters or variadic


#: the model settings that decide what is built (a recipe's pretrained or bottleneck width
#: over another model is its own to tune)
_MODEL_IDENTITY = ("_target_", "backbone", "encoder", "arch", "segmenter")


def _at(tree: Any, key: str) -> Any:
    """The value at the dotted ``key`` of a plain config ``tree`` (``_ABSENT``: none)."""
    for part in key.split("."):
        tree = tree.get(part, _ABSENT) if isinstance(tree, dict) else _ABSENT
    return tree


#: groups whose settings an experiment sets as part of its recipe, over any option (HRDA's
#: crops over one's own data set)
_RECIPE_GROUPS = ("dataset", "task")


def _experiment_file(name: str, own: Sequence[Path]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(settings, choices)`` of experiment ``name``'s file, after those of the experiments
    its defaults list builds on: dotted setting -> value (as written) that its body sets
    (``hydra`` left out), and config group -> the option its defaults list chooses
    (``override /model: vit_b16``)."""
    path = _experiment_path(name, own)  # (/experiment/other too)
    if path is None:
        return {}, {}
    text = path.read_text()
    if not re.search(r"^#\s*@package\s+_global_\s*$", text, re.M):  # its keys: experiment.*
        return {}, {}  # (check_config names the missing header)
    raw = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    settings: dict[str, Any] = {}
    choices: dict[str, str] = {}
    for entry in raw.get("defaults") or []:  # type: ignore[union-attr]
        if isinstance(entry, str) and entry != "_self_":  # another experiment it builds on
            inherited, chose = _experiment_file(entry, own)
            settings.update(inherited)
            choices.update(chose)
        elif isinstance(entry, dict):  # override /model: vit_b16
            for key, option in entry.items():
                group = str(key).removeprefix("override").strip().lstrip("/")
                if isinstance(option, str) and "@" not in group and "/" not in group:
                    choices[group] = option

    def leaves(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                leaves(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            settings[prefix] = node

    leaves({k: v for k, v in raw.items() if k not in ("defaults", "hydra")}, "")  # type: ignore[union-attr]
    return settings, choices


def _package_of(group: str, option: str, own: Sequence[Path]) -> str:
    """Where the option's settings go: its ``# @package`` line (``method.terms.mic`` for the
    ``mic`` group), else the group's name."""
    files = [importlib.resources.files("mic.conf") / group, *(d / group for d in own)]
    for folder in files:
        path = folder / f"{option}.yaml"
        if path.is_file():
            first = path.read_text().split("\n", 1)[0]
            found = re.fullmatch(r"#\s*@package\s+([\w.]+)\s*", first)
            if found and found.group(1) != "_global_":
                return found.group(1)
            break
    return group


def _merged_mapping(key: str, value: str, node: Any) -> str | None:
    """The message for ``key={...}`` that Hydra merges into the mapping ``node`` the config
    holds: ``{}`` changes nothing (``method.terms={}`` trained every term), and a key that
    ``node`` lacks ends in Hydra's "Could not override ... not in struct"; None otherwise."""
    if isinstance(node, ListConfig):  # (Hydra: "Cannot merge DictConfig with ListConfig")
        return f"{key}={value}: {key} is a list, not a mapping: give a list ({key}=[...])"
    if not isinstance(node, DictConfig):
        return None
    override = _parsed(f"{key}={value}")
    mapping = override.value() if override is not None else None
    if not isinstance(mapping, dict):
        return None
    holds = ", ".join(map(str, node)) or "nothing"
    replace = f"replace all of it with ~{key} +{key}={value}"
    if not mapping and len(node):
        return (
            f"{key}={{}} changes nothing: Hydra merges a mapping into {key}, which keeps what "
            f"it holds ({holds}); set one of them ({key}.<name>=...), or {replace}"
        )
    new = [str(k) for k in mapping if k not in node]
    if new and "_target_" in node:  # the arguments of an object: a typo (or one it lacks)
        names = sorted(str(k) for k in node if not str(k).startswith("_"))
        return (
            f"no setting {key}.{new[0]}: {key} has no {new[0]!r}."
            f"{did_you_mean(new[0], names)} Its settings: {', '.join(names) or 'none'}."
        )
    if new:
        return (
            f"{key}={value}: Hydra merges a mapping into {key} (which holds {holds}) and "
            f"cannot add {', '.join(new)} to it: add to it with ++{key}={value}, or {replace}"
        )
    return None


def _section_given_a_value(key: str, value: str | None, node: Any, above: Any) -> str | None:
    """The message for ``eval.validation=[snd]``: a list or a value given to ``node``, a
    section of settings (Hydra's "Cannot merge DictConfig with ListConfig"), with its settings
    and the settings of ``above`` (the level holding it) spelled alike; None for anything else
    (``{...}``, an interpolation and null are Hydra's to judge)."""
    if not isinstance(node, dict) or value is None:
        return None
    text = value.strip()
    if text.startswith(("{", "$")) or text.lower() in ("null", "none", "~"):
        return None
    parent, leaf = key.rsplit(".", 1)
    names = sorted(str(k) for k in node if not str(k).startswith("_"))
    others = [str(k) for k in (above if isinstance(above, dict) else {}) if str(k) != leaf]
    close = difflib.get_close_matches(leaf, others, n=5, cutoff=0.6)  # as did_you_mean
    hint = ", ".join(f"{parent}.{n}" for n in close)
    return (
        f"{key}={value}: {key} is a section of settings ({', '.join(names) or 'none'}), not "
        f"one value; set one of them ({key}.{names[0] if names else '<name>'}=...)"
        + (f". Did you mean: {hint}?" if hint else "")
    )


#: what ``OmegaConf.select`` gives for a key that is not there
_ABSENT = object()


#: config groups that are parts of other configs, never chosen on the command line, and
#: what to do instead
_PART_GROUPS = {
    "augmentation": (
        "augmentation/ holds parts of other configs (the strong augmentation of the mic "
        "options' masker and of self-training), not an option of mic-train: set their keys, "
        "e.g. method.terms.mic.masker.augmentation.jitter_p=0.5 (mic-train --cfg job "
        "lists them), or augmentation_jitter=torchvision for the colour operations of all"
    ),
    **dict.fromkeys(
        ("method_task", "mic_task"),
        "method_task/ and mic_task/ hold the task-specific values of a method or mic option, "
        "which mic-train merges in itself (method_task/<method>_<task>.yaml): choose the "
        "method (method=...) or mic option (mic=...) and the task's experiment instead",
    ),
}


def config_groups() -> str:
    """``mic-train --help``'s list of config groups and their options: mic's and those of
    the command line's ``--config-dir``, without the groups mic fills in itself and without
    the base files (names starting with ``_``) that experiments build on."""
    options: dict[str, set[str]] = {}
    for conf in [importlib.resources.files("mic.conf"), *(_config_dirs(sys.argv[1:]) or [])]:
        for group in conf.iterdir():
            if not group.is_dir() or group.name.startswith(("_", ".")):
                continue
            names = {p.name[:-5] for p in group.iterdir() if p.name.endswith(".yaml")}
            options.setdefault(group.name, set()).update(n for n in names if n[0] != "_")
    return "\n".join(
        f"{g}: {', '.join(sorted(o))}"
        for g, o in sorted(options.items())
        if o and g not in _PART_GROUPS
    )


OmegaConf.register_new_resolver("mic.config_groups", config_groups, replace=True)
# the run folder's name (hydra.job.name): _mic when the config has a MIC term
OmegaConf.register_new_resolver(
    "mic.run_suffix", lambda target: "" if target is None else "_mic", replace=True
)
# a '/' in the name that a config file gives (dataset.name: a/b) would make Hydra's log file a
# path that does not exist, a traceback before mic reads the config; _main then refuses it
OmegaConf.register_new_resolver(
    "mic.run_name", lambda name: str(name).replace("/", "-"), replace=True
)


_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_python_format = warnings.formatwarning


#: where Hydra builds the config's objects: their constructors' warnings come from there
_INSTANTIATE = os.path.join("hydra", "_internal", "instantiate")


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """mic's own warnings as one line, ``mic: warning: ...`` (they are advice to the user,
    not about a line of code); other libraries' as Python writes them."""
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep) or _INSTANTIATE in filename:
        return f"mic: warning: {message}\n"  # (a config's object warns as it is built)
    return _python_format(message, category, filename, lineno, line)


_python_show = warnings.showwarning
#: whether the job's run is built (its training begun), for _show_warning
_BUILT = [False]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Show a warning as Python does (``_format_warning``'s form), and write it to the run
    log too (``to_run_log``): the log tells the run's story as the console did; a progress
    bar on the same stream steps aside for it. Under torchrun, mic's own warnings while the
    run is built (advice on the settings, the same in every process) are shown by process 0
    alone; those of training (a data file of one process's share) by each process."""
    from tqdm import tqdm

    text = _format_warning(message, category, filename, lineno, line).rstrip("\n")
    if text.startswith("mic: ") and not (_BUILT[0] or process_info().is_main):
        return
    with tqdm.external_write_mode(file=file or sys.stderr):
        _python_show(message, category, filename, lineno, file, line)
    to_run_log(text.removeprefix("mic: warning: "), logging.WARNING)  # (the log says WARNING)


#: detectron2's anchors call torch.meshgrid without indexing= at every step: nothing for a user
#: to do (mic-train and mic-score leave it out, as the tests do: pyproject.toml)
DETECTRON2_MESHGRID = r"torch\.meshgrid: in an upcoming release"


def main() -> None:
    """``mic-train``: a Ctrl-C outside the training iterations ends it with one line
    (``mic.cli.INTERRUPTED``), also where a library caught its ``KeyboardInterrupt``; mic's
    warnings are written as one line each."""
    warnings.formatwarning = _format_warning
    warnings.showwarning = _show_warning
    warnings.filterwarnings("ignore", DETECTRON2_MESHGRID, UserWarning)
    warnings.filterwarnings("ignore", SCHEDULE_WITHOUT_STEP, UserWarning)  # (fp16's skips)
    catch_interrupts()
    try:
        _command()
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or interrupted():
            exit_interrupted()
        leave_at_next_signal()  # (a run stopped by its first Ctrl-C: said and saved)
        raise
    if interrupted():
        exit_interrupted()
    leave_at_next_signal(finished=True)


def _command() -> None:
    # as under ``python -m mic.train``: a _target_ may name a module of the current folder
    # (a task of your own in one file beside its config)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if {"-sc", "--shell-completion"} & set(sys.argv[1:]):  # Hydra's: install=bash, query=...
        _main()
        return
    if "--version" in sys.argv[1:]:  # Hydra's printed its own version alone
        import torch

        import mic

        print(f"mic {mic.__version__} (Hydra {hydra.__version__}, PyTorch {torch.__version__})")
        return
    alike = False
    try:
        _join_torchrun()
        alike = True  # an error of the command line alone: every process meets it alike
        unknown = (
            usage_problem(sys.argv[1:])
            or unknown_option(sys.argv[1:])
            or unknown_setting(sys.argv[1:])
            or grammar_problem(sys.argv[1:])
            or experiment_over_choice(sys.argv[1:])
            or sweep_value_problem(sys.argv[1:])
            or run_name_problem(sys.argv[1:])
            or own_config_problem(sys.argv[1:])
            or resolve_problem(sys.argv[1:])
        )
        if unknown:
            raise ConfigError(unknown)
        # before Hydra sets up its logging in the folder: one paragraph, not its traceback
        argv = sys.argv[1:]
        key = f"{folder_key(argv)}="
        if any(a.startswith(key) and not a[len(key) :].strip("'\" ") for a in argv):
            raise ConfigError(empty_run_folder(key[:-1]))
        alike = False  # (the run folder's writability is each node's)
        check_writable(run_folder(argv), create=False, option=folder_key(argv))
        if not any(a.split("=", 1)[0] in _NO_RUN for a in argv):  # _main writes the record
            subdir = ([".hydra"] + [a.split("=", 1)[1] for a in argv if a.startswith(SUBDIR)])[-1]
            _RECORD["subdir"] = None if subdir == "null" else subdir
            sweep = run_folder(argv) / "multirun.yaml"
            if folder_key(argv) == "hydra.sweep.dir" and sweep.is_file():
                _RECORD["sweep"] = sweep.read_bytes()
            sys.argv.append(f"{SUBDIR}null")
        sys.argv[1:] = options_first(sys.argv[1:])
    except MicError as e:  # under torchrun, one alike in every process is said by process 0
        if process_info().is_main or not alike:
            print(f"mic: error: {_one_paragraph(str(e))}", file=sys.stderr)
        sys.exit(2)
    _main()
    _leave_process_group()
    if _FAILED_JOBS:
        failed, jobs = len(_FAILED_JOBS), _JOBS[0]
        print(
            f"mic: error: {failed} of the sweep's {jobs} jobs stopped on the errors above"
            f"{'' if failed == jobs else ' (the others ran)'}; their folders: "
            f"{', '.join(_FAILED_JOBS)}",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
