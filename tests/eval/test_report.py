"""Reports: every field of every score in report.md, the paper's quoted rows marked as
such, side-by-side comparison across runs with differing protocols flagged."""

import json

import pytest

from qinyu.cli import main as qinyu_main
from qinyu.eval.report import PAPER_ROWS, compare, write_report


def score(metric, value, subset="english", **kw):
    row = {"benchmark": "c3", "subset": subset, "metric": metric, "value": value, "n": 10, "failed": 1,
           "normaliser": None, "aggregation": "right / all items", "judge": "gpt-4o", "scorer": None,
           "quoted": False}
    row.update(kw)
    return row


def test_write_report_has_every_column_and_the_quoted_rows(tmp_path):
    rows = [score("Overall (%)", 50.0, note_extra="an extra field"), score("Phono acc. (%)", 41.0)]
    json_path, md_path = write_report(tmp_path, rows, {"model": "/models/qinyu-nano", "benchmark": "c3",
                                                       "failures": [{"key": "english/x/0", "reason": "judge down"}]})
    rep = json.loads(json_path.read_text())
    assert rep["label"] == "qinyu-nano" and [r["value"] for r in rep["scores"]] == [50.0, 41.0]
    assert all(r["quoted"] is False for r in rep["scores"])
    assert {q["metric"] for q in rep["quoted"]} >= {"Overall (%)"} and all(q["quoted"] for q in rep["quoted"])
    assert all(q["benchmark"] == "c3" for q in rep["quoted"])  # only this benchmark's paper rows

    md = md_path.read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    for column in ("benchmark", "subset", "metric", "value", "n", "failed", "normaliser", "aggregation", "judge",
                   "scorer", "quoted", "note_extra"):
        assert f" {column} |" in header
    assert "| qinyu-nano | c3 | english | Overall (%) | 50.00 | 10 | 1 | — | right / all items | gpt-4o |" in md
    assert "| VITA-QinYu-8B | c3 | english | Overall (%) | 44.05 |" in md
    quoted_lines = [line for line in md.splitlines() if "VITA-QinYu-8B" in line]
    assert quoted_lines and all("quoted (paper)" in line for line in quoted_lines)
    assert "`english/x/0`: judge down" in md


def test_a_row_without_its_provenance_is_refused(tmp_path):
    row = score("Overall (%)", 50.0)
    del row["judge"]
    with pytest.raises(ValueError, match="judge"):
        write_report(tmp_path, [row])


def test_paper_rows_are_only_the_checked_ones():
    # the facts check these by the paper's own arithmetic: C3 macro overall, URO U, role-play Avg.
    c3 = {r["metric"]: r["value"] for r in PAPER_ROWS if r["benchmark"] == "c3"}
    subtests = [c3[m] for m in ("Phono acc. (%)", "Semantic acc. (%)", "Omission acc. (%)", "Coref acc. (%)",
                                "MultiTurn acc. (%)")]
    # published to two decimals, so the averages agree to within rounding
    assert sum(subtests) / 5 == pytest.approx(c3["Overall (%)"], abs=0.01)
    role = {r["metric"]: r["value"] for r in PAPER_ROWS if r["benchmark"] == "charactereval"}
    assert (role["CST"] + role["CNV"] + role["ATR"] + role["SS"]) / 4 == pytest.approx(role["Avg."], abs=0.01)
    assert all(r["quoted"] and r["source"].startswith("VITA-QinYu paper") for r in PAPER_ROWS)


def test_compare_side_by_side_flags_differing_protocols(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_report(a, [score("Overall (%)", 50.0), score("Phono acc. (%)", 40.0)], {"label": "model-a"})
    write_report(b, [score("Overall (%)", 60.0, judge="deepseek-r1", failed=0)], {"label": "model-b"})
    text = compare([a, b])
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| subset"))
    assert "model-a" in header and "model-b" in header and "VITA-QinYu-8B (quoted, paper)" in header
    overall = next(line for line in lines if "| Overall (%) |" in line)
    assert "50.00 (1 failed)" in overall and "| 60.00 |" in overall and "| 44.05 |" in overall
    assert "DIFFERS" in overall and "gpt-4o" in overall and "deepseek-r1" in overall
    phono = next(line for line in lines if "| Phono acc. (%) |" in line)
    assert "DIFFERS" not in phono and "| — |" in phono  # model-b has no Phono number

    # through the CLI
    assert qinyu_main(["eval", "report", str(a), str(b), "--out", str(tmp_path / "cmp.md")]) == 0
    assert "model-b" in capsys.readouterr().out and (tmp_path / "cmp.md").read_text() == text
    assert qinyu_main(["eval", "report", str(tmp_path / "none")]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_same_label_twice_gets_distinct_columns(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, v in ((a, 1.0), (b, 2.0)):
        write_report(d, [score("Overall (%)", v)], {"label": "same"})
    header = next(line for line in compare([a, b]).splitlines() if line.startswith("| subset"))
    assert "| same | same (2) |" in header
