import json

from qinyu.audio.io import save_audio
from qinyu.cli import main
from qinyu.data.schema import check_file

import numpy as np


def write(tmp_path, rows):
    save_audio(tmp_path / "ok.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "junk.wav").write_text("not audio")
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "d.jsonl"


GOOD = {"messages": [{"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": "hi<|audio|>"}],
        "audios": ["ok.wav", "ok.wav"]}


def test_every_bad_line_is_named(tmp_path, capsys):
    rows = [
        GOOD,                                                                        # 1: fine
        "{not json",                                                                 # 2
        {**GOOD, "audios": ["missing.wav", "ok.wav"]},                               # 3
        {**GOOD, "audios": ["junk.wav", "ok.wav"]},                                  # 4
        {**GOOD, "messages": [{"role": "robot", "content": "x"}, GOOD["messages"][1]]},  # 5
        {**GOOD, "audios": ["ok.wav"]},                                              # 6: too many placeholders
        {**GOOD, "messages": [GOOD["messages"][0], {"role": "assistant", "content": " "}], "audios": ["ok.wav"]},  # 7
        {**GOOD, "task": "dance"},                                                   # 8
    ]
    path = write(tmp_path, rows)
    count, problems = check_file(path)
    by_line = {}
    for p in problems:
        by_line.setdefault(p.line, p)  # the first problem of each line
    assert count == 8 and set(by_line) == {2, 3, 4, 5, 6, 7, 8}
    assert "not valid JSON" in by_line[2].message
    assert by_line[3].field == "audios[0]" and "not found" in by_line[3].message
    assert by_line[4].field == "audios[0]" and "unreadable" in by_line[4].message
    assert by_line[5].field == "messages[0].role" and "robot" in by_line[5].message
    assert by_line[6].field == "audios" and "1 file(s) for 2" in by_line[6].message
    assert by_line[7].field == "messages[1].content" and "empty assistant turn" in by_line[7].message
    assert by_line[8].field == "task"
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "line 5: messages[0].role: unknown role 'robot'" in out and "8 sample(s), 8 problem(s)" in out  # line 5 has two


def test_history_speech_and_voice_rules(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b<|audio|>"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
             "audios": ["ok.wav"]},
            {**GOOD, "voice": {"name": "x"}}]
    _, problems = check_file(write(tmp_path, rows))
    assert [(p.line, p.field) for p in problems] == [(1, "messages[1].content"), (2, "voice")]


def test_good_file_passes(tmp_path, capsys):
    path = write(tmp_path, [GOOD, {**GOOD, "voice": {"clip": "ok.wav"}}])
    assert check_file(path) == (2, [])
    assert main(["data", "check", str(path)]) == 0
