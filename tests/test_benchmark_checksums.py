"""benchmarks/checksums.py: a comparison against checksums recorded in another environment
says so rather than reporting only a change."""

import json

from benchmarks import checksums


def test_checksums_recorded_elsewhere_are_reported_as_another_environment(
    tmp_path, monkeypatch, capsys
):
    results = tmp_path / "checksums.json"
    monkeypatch.setattr(checksums, "RESULTS", results)
    assert checksums.main(["--record", "--only", "digits_dann_mic"]) == 0
    recorded = json.loads(results.read_text())
    assert recorded["environment"] == checksums.environment()
    assert checksums.main(["--only", "digits_dann_mic"]) == 0  # same code, same environment
    capsys.readouterr()

    other = {**recorded["environment"], "cpu_capability": "another"}
    results.write_text(json.dumps({**recorded, "digits_dann_mic": "0" * 64, "environment": other}))
    assert checksums.main(["--only", "digits_dann_mic"]) == 1
    out = capsys.readouterr().out
    assert "1 of 1 cases differ" in out
    assert "differs in cpu_capability" in out and "not comparable" in out
