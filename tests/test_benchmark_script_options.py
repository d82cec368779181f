"""What every benchmark script refuses before its runs (``common.check_options``), and how it
stops on SIGTERM: through the scripts' own command lines, in processes of their own."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BENCHMARKS = ROOT / "benchmarks"


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "args", "said"),
    [
        (
            "digits.py",
            ["--seeds", "0", "1", "--", "seed=3"],
            "the override seed=3: the script sets seed",
        ),
        ("detection.py", ["device=cpu"], "the override device=cpu: the script sets device"),
        (
            "segmentation.py",
            ["--override", "hydra.run.dir=/tmp/x"],
            "the script makes its runs without Hydra",
        ),
    ],
)
def test_an_override_of_what_the_script_sets_itself_is_refused(tmp_path, name, args, said):
    """``seed=3`` after the script's own ``seed=<s>`` made every seed's run the same one,
    recorded under the seeds asked for (a spread of 0, silently)."""
    out = script(name, "--out", str(tmp_path / "t.md"), *args, cwd=tmp_path)
    assert out.returncode == 2 and said in out.stderr, out.stderr[-2000:]
    assert not list(tmp_path.glob("t.*"))


@pytest.mark.parametrize("name", ["digits.py", "detection.py", "context_longer.py"])
def test_table_only_without_cached_runs_is_refused_and_writes_nothing(tmp_path, name):
    """A header-only table was written, with status 0."""
    out = script(name, "--table-only", "--out", str(tmp_path / "t"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--table-only: " in out.stderr and "holds no runs" in out.stderr
    assert not list(tmp_path.glob("t*"))


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("foo.bar=4", "no task 'foo'; one of det_shapes, digits, streets"),
        ("digits.iteratons=4", "digits has no setting 'iteratons'; one of interval, iterations"),
        ("digits.iterations=abc", "'abc' is no JSON value"),
        ("digits.iterations", "give TASK.KEY=VALUE"),
        ('digits.iterations="4"', 'digits.iterations takes int values (now 400), got "4"'),
    ],
)
def test_model_selection_set_names_what_is_wrong(tmp_path, given, said):
    """A KeyError, a JSONDecodeError or a ValueError before; a misspelt key ran the whole
    benchmark at the defaults."""
    args = ["--out", str(tmp_path / "m.md"), "--work", str(tmp_path / "w"), "--set", given]
    out = script("model_selection.py", *args, cwd=tmp_path)
    assert out.returncode == 2 and said in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_sigterm_ends_the_workers_of_a_script_s_pool(tmp_path):
    """SIGTERM reaches the script alone (``timeout``, ``kill``): its pool's workers went on
    training, orphaned, for minutes."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        sys.path.insert(0, {str(BENCHMARKS)!r})
        from common import end_workers_on_sigterm

        def work(path):
            import os
            open(path, "w").write(str(os.getpid()))
            time.sleep(120)

        if __name__ == "__main__":
            end_workers_on_sigterm()
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                pool.submit(work, {str(tmp_path / "worker")!r}).result()
        """
    )
    (tmp_path / "pool.py").write_text(code)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "pool.py")], cwd=tmp_path)
    pid_file = tmp_path / "worker"
    for _ in range(600):  # the worker started (it writes its pid)
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    for _ in range(100):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its script")
