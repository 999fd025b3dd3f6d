"""`python -m serving`: a failure a person can act on is one line; a bug keeps its traceback."""

from __future__ import annotations

import pytest
from support import ROOT

from pipeline.errors import StageError
from serving import cli


def test_an_expected_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def refuse(args, params):
        raise StageError("no space left on /models: nothing was written; version 3 keeps serving")

    monkeypatch.setitem(cli.COMMANDS, "status", refuse)
    assert cli.main(["--params", str(ROOT / "params.yaml"), "status"]) == 1
    assert "status failed: no space left on /models" in capsys.readouterr().err


def test_an_internal_value_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError from inside numpy or tritonclient is a bug, not a message for the user."""

    def bug(args, params):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setitem(cli.COMMANDS, "status", bug)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["--params", str(ROOT / "params.yaml"), "status"])
