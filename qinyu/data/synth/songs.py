"""Public-domain songs, written out note by note for the singing pipeline.

Melodies and lyrics are traditional or long out of copyright: Twinkle Twinkle Little
Star (18th-century French melody, Jane Taylor's 1806 words), Mary Had a Little Lamb
(1830), Frère Jacques (18th century, traditional English words), London Bridge
(traditional), Row Row Row Your Boat (1852), Ode to Joy (Beethoven, 1824, with Henry
van Dyke's 1907 hymn words), and Two Tigers (两只老虎: the Frère Jacques melody with
traditional Mandarin children's words). All are in C major.

Notation (``svs.song_from_phrases``): melody tokens are note names with beats ("G4:2";
one beat by default; "r" is a rest); lyrics give one syllable per note, "Twin-" joins the
next syllable into one word, and "kle|kul" sings "kul" for the written "kle" because
espeak-ng reads word fragments by spelling ("kle" would come out as "klee").
"""

from __future__ import annotations

from .svs import Song, song_from_phrases

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
ZH_ORDINALS = ["一", "二", "三", "四", "五", "六", "七", "八"]


def line_name(k: int, language: str = "en") -> str:
    if language == "zh":
        return f"第{ZH_ORDINALS[k]}句"
    return f"the {ORDINALS[k]} line"


def _lines(melodies_and_lyrics, language="en"):
    return [(line_name(k, language), m, w) for k, (m, w) in enumerate(melodies_and_lyrics)]


def twinkle() -> Song:
    a = ("C4 C4 G4 G4 A4 A4 G4:2", "Twin- kle|kul twin- kle|kul lit- tle|tul star")
    b = ("F4 F4 E4 E4 D4 D4 C4:2", "how I won- der|durr what you are")
    return song_from_phrases("twinkle", "Twinkle Twinkle Little Star", 100, _lines([
        a, b,
        ("G4 G4 F4 F4 E4 E4 D4:2", "up a|uh- bove|buv the world so high"),
        ("G4 G4 F4 F4 E4 E4 D4:2", "like a|uh dia|die- mond|mund in the sky"),
        a, b]))


def mary() -> Song:
    return song_from_phrases("mary", "Mary Had a Little Lamb", 120, _lines([
        ("E4 D4 C4 D4 E4 E4 E4:2", "Ma|mare- ry|ree had a|uh lit- tle|tul lamb"),
        ("D4 D4 D4:2 E4 G4 G4:2", "lit- tle|tul lamb lit- tle|tul lamb"),
        ("E4 D4 C4 D4 E4 E4 E4 E4", "Ma|mare- ry|ree had a|uh lit- tle|tul lamb its"),
        ("D4 D4 E4 D4 C4:4", "fleece was white as snow")]))


def frere_jacques() -> Song:
    return song_from_phrases("frere-jacques", "Frère Jacques", 120, _lines([
        ("C4 D4 E4 C4 C4 D4 E4 C4", "are you sleep- ing are you sleep- ing"),
        ("E4 F4 G4:2 E4 F4 G4:2", "Bro|bruh- ther John Bro|bruh- ther John"),
        ("G4:0.5 A4:0.5 G4:0.5 F4:0.5 E4 C4 G4:0.5 A4:0.5 G4:0.5 F4:0.5 E4 C4",
         "mor- ning bells are ring- ing mor- ning bells are ring- ing"),
        ("C4 G3 C4:2 C4 G3 C4:2", "ding dang dong ding dang dong")]))


def london_bridge() -> Song:
    a = ("G4:1.5 A4:0.5 G4 F4 E4 F4 G4:2", "Lon- don|dun Bridge is fall- ing down")
    return song_from_phrases("london-bridge", "London Bridge", 120, _lines([
        a,
        ("D4 E4 F4:2 E4 F4 G4:2", "fall- ing down fall- ing down"),
        a,
        ("D4:2 G4:2 E4 C4:3", "my fair la|lay- dy|dee")]))


def row_your_boat() -> Song:
    return song_from_phrases("row-your-boat", "Row Row Row Your Boat", 100, _lines([
        ("C4:1.5 C4:1.5 C4 D4:0.5 E4:1.5", "row row row your boat"),
        ("E4 D4:0.5 E4 F4:0.5 G4:3", "gent- ly|lee down the stream"),
        ("C5:0.5 C5:0.5 C5:0.5 G4:0.5 G4:0.5 G4:0.5 E4:0.5 E4:0.5 E4:0.5 C4:0.5 C4:0.5 C4:0.5",
         "mer- ri|rih- ly|lee mer- ri|rih- ly|lee mer- ri|rih- ly|lee mer- ri|rih- ly|lee"),
        ("G4 F4:0.5 E4 D4:0.5 C4:3", "life is but a|uh dream")]))


def ode_to_joy() -> Song:
    return song_from_phrases("ode-to-joy", "Ode to Joy", 120, _lines([
        ("E4 E4 F4 G4 G4 F4 E4 D4", "Joy- ful joy- ful we a|uh- dore thee"),
        ("C4 C4 D4 E4 E4:1.5 D4:0.5 D4:2", "God of glo- ry|ree Lord of love"),
        ("E4 E4 F4 G4 G4 F4 E4 D4", "hearts un- fold like flowers|flowrs be- fore thee"),
        ("C4 C4 D4 E4 D4:1.5 C4:0.5 C4:2", "Ope|ope- ning to the sun a|uh- bove|buv")]))


def two_tigers() -> Song:
    return song_from_phrases("two-tigers", "两只老虎", 120, _lines([
        ("C4 D4 E4 C4 C4 D4 E4 C4", "两 只 老 虎 两 只 老 虎"),
        ("E4 F4 G4:2 E4 F4 G4:2", "跑 得 快 跑 得 快"),
        ("G4:0.5 A4:0.5 G4:0.5 F4:0.5 E4 C4 G4:0.5 A4:0.5 G4:0.5 F4:0.5 E4 C4", "一 只 没 有 眼 睛 一 只 没 有 尾 巴"),
        ("C4 G3 C4:2 C4 G3 C4:2", "真 奇 怪 真 奇 怪")], "zh"), language="zh")


def builtin_songs() -> list[Song]:
    return [twinkle(), mary(), frere_jacques(), london_bridge(), row_your_boat(), ode_to_joy(), two_tigers()]
