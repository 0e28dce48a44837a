"""Score arithmetic against the paper's own rows (benchmark-facts.md §1, §3, §4) and hand-made lists.

The paper prints numbers rounded to 2 decimals, so a value we compute from its rounded
inputs is checked to half a unit of the last printed digit, scaled by what the formula
multiplies it by."""

import pytest

from qinyu.eval.scores import (C3_SUBTESTS, CHARACTEREVAL_METRICS, c3_overall, charactereval_table, roleplay_average,
                               seedtts_wer, uro_category_score, uro_dataset_score, uro_repeat_score)

HALF_CENT = 0.005 + 1e-9  # half a unit of the paper's last digit (+ float slack)


def test_charactereval_metric_names():
    assert len(CHARACTEREVAL_METRICS) == 12
    assert CHARACTEREVAL_METRICS["KE"] == ("Exposure", "知识曝光度")
    assert CHARACTEREVAL_METRICS["CS"] == ("Communication_skills", "交流技巧")


def test_charactereval_x20_on_exact_inputs():
    means = {"KE": 1.0, "KA": 2.0, "KH": 3.0, "PB": 4.0, "PU": 5.0,
             "Flu": 3.0, "Coh": 3.5, "Cons": 4.0, "HL": 2.0, "CS": 2.5, "ED": 3.0, "Emp": 3.5}
    table = charactereval_table(means)
    # CST = 20 x mean(2, 3, 4, 5) = 70 (KE = 1 left out; with it the mean would be 60)
    assert table == pytest.approx({"CST": 70.0, "CNV": 70.0, "ATR": 55.0})
    # the same by CharacterEval's own metric names
    by_en = {CHARACTEREVAL_METRICS[k][0]: v for k, v in means.items()}
    assert charactereval_table(by_en) == table
    assert charactereval_table({k: v for k, v in means.items() if k != "KE"}) == table  # KE not needed


def test_charactereval_quoted_rescale_examples():
    # facts §1: Qwen3-8B 2.52 -> 50.37 and 3.74 -> 74.82: the paper multiplies the
    # unrounded 5-point mean by 20, so the printed 2.52 may be anything in [2.515, 2.525)
    for five_point, hundred_point in ((2.52, 50.37), (3.74, 74.82)):
        assert abs(20 * five_point - hundred_point) <= 20 * HALF_CENT
        assert abs((five_point - 1) / 4 * 100 - hundred_point) > 5  # not (s - 1) / 4 x 100
    exact = {m: 2.5185 for m in ("KA", "KH", "PB", "PU")} | {m: 3.741 for m in ("Flu", "Coh", "Cons")} \
        | {m: 3.0 for m in ("HL", "CS", "ED", "Emp")}
    table = charactereval_table(exact)
    assert round(table["CST"], 2) == 50.37 and round(table["CNV"], 2) == 74.82


def test_charactereval_missing_or_unknown_metric():
    with pytest.raises(ValueError, match=r"CST needs .*missing \['PU'\]"):
        charactereval_table({"KA": 3, "KH": 3, "PB": 3})
    with pytest.raises(ValueError, match="unknown CharacterEval metrics"):
        charactereval_table({"MBTI": 3})


def test_roleplay_average_qwen25_omni():
    # Table 2: (50.24 + 73.52 + 55.12 + 38.90) / 4 = 217.78 / 4 = 54.445 -> printed 54.45
    assert abs(roleplay_average(50.24, 73.52, 55.12, 38.90) - 54.45) <= HALF_CENT


def test_uro_categories_freeze_omni():
    # EN Understanding = mean(Repeat 70.89, Summary 78.87, GaokaoEval 26.29) = 176.05 / 3 = 58.683 -> 58.68
    assert round(uro_category_score([70.89, 78.87, 26.29]), 2) == 58.68
    # ZH Understanding = mean(4.97, 71.82, 7.66) = 84.45 / 3 = 28.15
    assert round(uro_category_score([4.97, 71.82, 7.66]), 2) == 28.15


def test_uro_dataset_scores():
    # open: per-item means of 3 samples [4, 4, 5] -> 13/3 and [2, 3, 3] -> 8/3; mean 3.5 -> x20 = 70
    assert uro_dataset_score("open", [13 / 3, 8 / 3]) == pytest.approx(70.0)
    assert uro_dataset_score("semi-open", [5.0, 1.0, 0.0]) == pytest.approx(40.0)  # a failed item counts 0
    # qa: Yes/Yes/No -> 2/3 and No/No/No -> 0: mean 1/3 -> x100
    assert uro_dataset_score("qa", [2 / 3, 0.0]) == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="uro_repeat_score"):
        uro_dataset_score("wer", [0.1])
    with pytest.raises(ValueError, match="no"):
        uro_dataset_score("qa", [])


def test_uro_repeat_score_by_hand():
    # WERs 0.0, 0.2, 0.5, 0.8: ok (<= 0.5) are 0.0, 0.2, 0.5 -> ok rate 3/4,
    # mean WER of ok items 0.7 / 3; score = 0.75 x (1 - 0.7/3) x 100 = 0.75 x 76.667 = 57.5
    assert uro_repeat_score([0.0, 0.2, 0.5, 0.8]) == pytest.approx(57.5)
    assert uro_repeat_score([0.0, 0.0]) == 100.0
    assert uro_repeat_score([0.9, 1.0]) == 0.0  # nothing ok
    with pytest.raises(ValueError):
        uro_repeat_score([])


def test_c3_overall_qinyu_8b_en():
    # Table 4: (41.38 + 21.57 + 17.84 + 64.15 + 75.29) / 5 = 220.23 / 5 = 44.046 -> 44.05
    sub = dict(zip(C3_SUBTESTS, (41.38, 21.57, 17.84, 64.15, 75.29)))
    assert abs(c3_overall(sub) - 44.05) <= HALF_CENT
    with pytest.raises(ValueError, match="5 subtests"):
        c3_overall({"phonological": 1.0})


def test_seedtts_wer_percent():
    assert seedtts_wer([0.0, 0.1, 0.5]) == pytest.approx(20.0)
