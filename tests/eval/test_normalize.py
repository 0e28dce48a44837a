"""The five named normalisers on hand-made text, including the cases where the published
pipelines disagree ("world." vs "world", "it's", "3个" vs "三个", traditional vs simplified,
"colour" vs "color")."""

import pytest

from qinyu.eval.normalize import NORMALISERS, Normaliser, get_normaliser, wenet_tokens

N = NORMALISERS


def same(name: str, ref: str, hyp: str) -> bool:
    """Whether a pipeline scores ``hyp`` as a perfect transcript of ``ref``."""
    norm = N[name]
    return norm.tokens(ref) == norm.hypothesis_tokens(hyp)


def test_registry():
    assert set(N) == {"seedtts-en", "seedtts-zh", "uro-en", "uro-zh", "wenet"}
    for name, norm in N.items():
        assert isinstance(norm, Normaliser) and norm.name == name
        assert norm.unit in ("word", "char") and norm.description and norm.label == f"{name} v{norm.version}"
    assert [N[k].unit for k in ("seedtts-en", "seedtts-zh", "uro-en", "uro-zh")] == ["word", "char", "word", "char"]
    assert get_normaliser("uro-en") is N["uro-en"]
    with pytest.raises(ValueError, match="known: seedtts-en, seedtts-zh, uro-en, uro-zh, wenet"):
        get_normaliser("whisper")
    with pytest.raises(TypeError, match="uro-en"):
        N["uro-en"](None)


# -- where the pipelines disagree -----------------------------------------------------------
def test_full_stop_world_dot_vs_world():
    # Seed-TTS and URO delete the full stop; WeNet keeps ASCII "." as part of the word
    assert same("seedtts-en", "hello world", "Hello world.")
    assert same("uro-en", "hello world", "Hello world.")
    assert not same("wenet", "hello world", "Hello world.")
    assert N["wenet"].tokens("Hello world.") == ["HELLO", "WORLD."]


def test_apostrophe_its():
    assert N["seedtts-en"].tokens("It's fine!") == ["it's", "fine"]  # apostrophe kept, one word
    assert N["uro-en"].tokens("It's fine!") == ["it", "is", "fine"]  # Whisper expands the contraction
    assert N["uro-zh"]("It's") == "its"  # URO's Chinese path deletes the apostrophe
    assert N["wenet"].tokens("It's fine!") == ["IT'S", "FINE!"]  # "!" only goes where a token starts
    assert same("uro-en", "it is", "it's") and not same("seedtts-en", "it is", "it's")


def test_digits_vs_chinese_numerals():
    assert N["uro-zh"]("我有3个苹果") == "我有三个苹果"
    assert same("uro-zh", "三个", "3个")
    assert not same("seedtts-zh", "三个", "3个")
    assert not same("wenet", "三个", "3个")
    assert N["wenet"].tokens("我有3个") == ["我", "有", "3", "个"]
    # punctuation goes before the numbers are read: URO turns "3.5" into 35, not 3 point 5
    assert N["uro-zh"]("3.5公斤") == "三十五公斤"


def test_traditional_vs_simplified_hypothesis_only():
    seed = N["seedtts-zh"]
    assert seed.hypothesis_tokens("說話。") == ["说", "话"]  # the ASR output is converted...
    assert seed.tokens("說話。") == ["說", "話"]  # ...the reference never is
    assert same("seedtts-zh", "说话", "說話")
    assert not same("uro-zh", "说话", "說話") and not same("wenet", "说话", "說話")
    for name in ("seedtts-en", "uro-en", "uro-zh", "wenet"):  # only Seed-TTS zh has a hypothesis-only step
        assert N[name].hypothesis_only is None


def test_colour_vs_color():
    assert same("uro-en", "the color", "The colour.")  # Whisper's British -> American spelling map
    assert not same("seedtts-en", "the color", "The colour.")
    assert not same("wenet", "the color", "the colour")


def test_numbers_in_english():
    assert N["uro-en"]("It is twenty-five dollars.") == "it is $25"
    assert N["seedtts-en"]("It is twenty-five dollars.") == "it is twentyfive dollars"  # "-" deleted


# -- each pipeline on its own ---------------------------------------------------------------
def test_seedtts_en_steps():
    seed = N["seedtts-en"]
    assert seed("Hello,  “World”!  ") == "hello world "  # zhon + ASCII punctuation, one double-space pass
    assert seed("a    b") == "a  b"  # str.replace is one pass: four spaces become two...
    assert seed.tokens("a    b") == ["a", "b"]  # ...and jiwer's split drops the rest
    assert seed.hypothesis_only is None


def test_seedtts_zh_every_character_one_unit():
    seed = N["seedtts-zh"]
    assert seed("你好，world!") == "你 好 w o r l d"
    assert seed.tokens("你好 AB") == ["你", "好", "A", "B"]  # spaces dropped, no case folding


def test_uro_zh_counts_spaces():
    uro = N["uro-zh"]
    assert uro.tokens(" 你好 World! ") == ["你", "好", " ", "w", "o", "r", "l", "d"]  # jiwer.cer keeps inner spaces
    assert uro("“你好”，‘世界’") == "你好世界"


def test_uro_en_whisper():
    assert N["uro-en"]("  Mr. Smith, I'm GONNA go. ") == "mister smith i am going to go"


def test_wenet_tokeniser():
    assert wenet_tokens("你好，世界！") == ["你", "好", "世", "界"]
    assert wenet_tokens("hello, world") == ["HELLO,", "WORLD"]  # a mark inside an ASCII run stays
    assert wenet_tokens(", hello") == ["HELLO"]  # a mark where a token starts goes
    assert wenet_tokens("<unk> ok<noise>") == ["OK"]  # tags cut out, empty tokens dropped
    assert wenet_tokens("<unk><noise>") == []
    assert wenet_tokens("我爱NLP和AI") == ["我", "爱", "NLP", "和", "AI"]
    assert wenet_tokens("a\tb\nc") == ["A", "B", "C"]
    assert wenet_tokens("“引号”") == ["“", "引", "号", "”"]  # marks not in the list are tokens
    norm = N["wenet"]
    assert norm("你好 hello") == "你 好 HELLO" and norm.tokens("你好 hello") == ["你", "好", "HELLO"]
