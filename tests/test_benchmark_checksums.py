"""benchmarks/checksums.py: a comparison against checksums recorded in another environment
says so rather than reporting only a change; the file is chosen with --file; bad options are
one argparse message."""

import json

import pytest

from benchmarks import checksums


def test_checksums_recorded_elsewhere_are_reported_as_another_environment(
    tmp_path, monkeypatch, capsys
):
    committed = tmp_path / "committed.json"
    monkeypatch.setattr(checksums, "RESULTS", committed)
    results = tmp_path / "base.json"
    only = ["--only", "digits_dann_mic", "--file", str(results)]
    assert checksums.main(["--record", *only]) == 0
    assert not committed.exists()  # --file, not the default file, is written
    recorded = json.loads(results.read_text())
    assert recorded["environment"] == checksums.environment()
    assert checksums.main(only) == 0  # same code, same environment
    assert f"all 1 cases match {results}" in capsys.readouterr().out

    other = {**recorded["environment"], "cpu_capability": "another"}
    results.write_text(json.dumps({**recorded, "digits_dann_mic": "0" * 64, "environment": other}))
    assert checksums.main(only) == 1
    out = capsys.readouterr().out
    assert "1 of 1 cases differ" in out
    here = checksums.environment()["cpu_capability"]
    assert f"differs (cpu_capability: 'another' -> {here!r})" in out and "not comparable" in out
    assert "--record --file" in out  # the advice records into a file of its own


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--only", "nosuch"], "argument --only: invalid choice: 'nosuch' (choose from"),
        # an empty --only ran every case (ten minutes, not the none it seemed to ask for)
        (["--only"], "argument --only: expected at least one argument"),
        (["--file", "{tmp}/missing.json"], "--file {tmp}/missing.json: no such file"),
        (["--file", "{tmp}/bad.json"], "--file {tmp}/bad.json: not a checksums file"),
    ],
)
def test_bad_options_are_one_message(words, message, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SystemExit) as info:
        checksums.main([w.format(tmp=tmp_path) for w in words])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err
    if words[:2] == ["--only", "nosuch"]:
        assert all(name in err for name in checksums.CASES)
