"""benchmarks/resume_check.py: a device this machine lacks is refused before any run, and a
run that fails is reported with the end of its stderr and the command that reruns it."""

import shlex

import pytest
import torch

from benchmarks import resume_check


def test_a_missing_cuda_device_is_refused_up_front(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    started = []
    monkeypatch.setattr(resume_check, "mic_train", lambda *a: started.append(a))
    with pytest.raises(SystemExit) as info:
        resume_check.main(["--device", "cuda"])
    assert info.value.code == 2 and not started
    assert "--device cuda: there is no CUDA device here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        resume_check.main(["--device", "nonsense"])
    assert "--device nonsense: choose auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err


def test_a_failed_run_shows_its_stderr_and_the_command_to_rerun_it(monkeypatch):
    monkeypatch.setattr(resume_check, "TRAIN", [*resume_check.TRAIN, "no_such_setting=1"])
    with pytest.raises(SystemExit) as info:
        resume_check.main(["--device", "cpu"])
    message = str(info.value.code)
    assert message.startswith("the once run failed; the end of its stderr:")
    assert "no setting 'no_such_setting'" in message
    rerun = message.split("rerun it by hand: ")[1]
    assert shlex.split(rerun)[1:4] == ["-m", "mic.train", "log.progress=false"]
    assert "no_such_setting=1" in rerun and "device=cpu" in rerun
