import json
import subprocess
import sys

import pytest

from qinyu.cli import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "qinyu", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("info", "new-checkpoint", "demo"):
        assert cmd in out


def test_new_checkpoint_then_info(tmp_path, capsys):
    assert main(["new-checkpoint", "--preset", "tiny", "--out", str(tmp_path / "ck")]) == 0
    assert "UNTRAINED" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    assert "UNTRAINED (random initialisation)" in out and "1,391,552" in out and "audio 281..8536" in out
    assert main(["info", "--json", str(tmp_path / "ck")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 1391552 and info["status"].startswith("UNTRAINED")
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["trained"] is False


def test_info_errors_are_clear(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("[]")
    assert main(["info", str(tmp_path)]) == 2
    assert "config must be a JSON object" in capsys.readouterr().err


def test_new_checkpoint_refuses_to_overwrite(tmp_path):
    (tmp_path / "x").write_text("keep")
    with pytest.raises(SystemExit, match="not empty"):
        main(["new-checkpoint", "--out", str(tmp_path)])


def test_bad_arguments_exit_nonzero():
    r = subprocess.run([sys.executable, "-m", "qinyu", "new-checkpoint", "--preset", "huge", "--out", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'huge'" in r.stderr
