"""``qinyu speedrun`` end to end at a tiny size: every step runs through the real code
(corpus, codec fit, BPE, CAM++, CMVN, prepare, text-to-timbre, CTC encoder, stages
0/1/2, assembly, evaluation), the run resumes, ``--from`` redoes what follows, and the
shipped folder loads and answers."""

import json
import re
from dataclasses import replace

import pytest

from qinyu.cli import main
from qinyu.nano.speedrun import STEPS, Speedrun, SpeedrunConfig, SpeedrunError

TINY_STAGE = {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_ratio": 0.0, "dtype": "bf16"}


def tiny_config() -> SpeedrunConfig:
    return SpeedrunConfig(
        corpus_scale=0.02, codec_iterations=1, bpe_vocab=400,  # room for the 21 number words whole
        speaker_config={"growth_rate": 8, "bn_size": 2, "init_channels": 16, "block_layers": [1, 1, 1],
                        "head_channels": 8},
        speaker_steps=2, cmvn_files=8, timbre_config={"hidden": 16, "filter_channels": 16, "blocks": 1, "heads": 1},
        timbre_steps=2, encoder_steps=2, encoder_extra_utterances=3, encoder_extra_requests=4,
        encoder_extra_song_requests=2,
        # the options left off by default, exercised (the simple encoder's in the test below)
        corpus_character_tts=True,
        encoder_salad_utterances=3, encoder_number_utterances=3, encoder_spliced_utterances=3,
        stage0={**TINY_STAGE, "train_audio_embeddings": True}, stage1=dict(TINY_STAGE),
        stage2=dict(TINY_STAGE), eval_limit=1)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from qinyu.nano.corpus import build_corpus

    out = tmp_path_factory.mktemp("speedrun") / "corpus"
    assert build_corpus(out, scale=0.02, progress=False, character_tts=True).ok
    return out


def test_the_whole_run_resumes_and_ships(tiny_corpus, tmp_path):
    import torch

    from qinyu.engine.session import load_session
    from qinyu.model import QinYuForConditionalGeneration

    run = Speedrun(tmp_path / "run", tiny_config(), corpus=tiny_corpus, progress=False)
    summary = run.run()
    assert list(summary["steps"]) == list(STEPS)
    ck = run.checkpoint
    for name in ("config.json", "model.safetensors", "tokenizer.json", "am.mvn", "codec/codec.json",
                 "speaker_encoder", "timbre/timbre.json", "report.md", "report.json", "training/stage2/metrics.csv",
                 "training/encoder_ctc_metrics.csv"):
        assert (ck / name).exists(), name
    config = json.loads((ck / "config.json").read_text())
    assert config["trained"] and config["codec"] == {"type": "nano", "path": "codec"}
    assert config["speaker_encoder"] == "speaker_encoder" and config["cmvn"] == "am.mvn"
    assert config["speaker_at_audio_steps"] is True  # the voice at every audio step (the default)
    assert QinYuForConditionalGeneration.from_pretrained(ck, dtype=None).dtype == torch.bfloat16
    report = json.loads((ck / "report.json").read_text())
    assert report["items"]["qa"] == 1

    # one vector per voice: every sample a named voice speaks is conditioned on that voice's
    # mean vector, never on its own reply's (which carries what the reply says)
    import numpy as np

    prepared = run.out / "prepared"
    voiced = [s for s in run.prepared_samples() if s["meta"].get("voice")]
    assert voiced and all(s["voice"] == f"voices/{s['meta']['voice']}.npy" for s in voiced)
    shipped_voice = np.load(ck / "voices" / "assistant-en.npy")
    # the QA replies read again by the characters: TTS samples in the character's voice vector,
    # left out of the codec's and CAM++'s fits
    read = [s for s in run.prepared_samples() if s["meta"]["nano"]["kind"] == "character_tts"]
    assert read and all(s["task"] == "tts" and s["voice"] == f"voices/{s['meta']['voice']}.npy" for s in read)
    fitted = run.assistant_audio()
    assert fitted and all(s["meta"]["nano"]["kind"] != "character_tts" for _, s in fitted)
    # the encoder step's re-spoken requests keep their sample's answer and get new user speech
    from qinyu.data.dataset import read_prepared

    sources = {s["id"]: s for s in run.prepared_samples()}
    songs = read_prepared(prepared / "extra_singing.prepared.jsonl")
    extra = read_prepared(prepared / "extra_chat.prepared.jsonl") + songs
    assert len(extra) == 4 + 2 and len(songs) >= 2  # the requests drawn, then song requests alone
    for row in extra:
        source = sources[row["id"].rsplit("-extra-", 1)[0]]
        assert row["audio"][1] == source["audio"][1] and row["messages"] == source["messages"]
        assert row["voice"] == source["voice"] and row["task"] == source["task"]
        features = np.load(prepared / row["audio"][0]["features"])
        assert features.shape == (row["audio"][0]["frames"], 560)
        assert np.load(prepared / row["audio"][0]["speaker"]).shape == (192,)
    assert np.array_equal(shipped_voice, np.load(prepared / "voices" / "assistant-en.npy"))
    # the audio encoder is a small SenseVoiceSmall whose own CTC head (text tokens + blank) was
    # trained and ships with it; the LM reads the 192-d frames before that head
    from safetensors import safe_open

    from qinyu.layout import load_tokenizer

    tokenizer = load_tokenizer(ck)
    classes = tokenizer.get_vocab_size(with_added_tokens=False) + 1
    assert all(len(tokenizer.encode(f" {w}").ids) == 1 for w in ("zero", "fifteen", "nineteen", "twenty"))
    assert config["audio_encoder"]["type"] == "sensevoice" and config["audio_encoder"]["vocab_size"] == classes
    assert config["audio_encoder_output_size"] == 192 and not config.get("audio_ctc_compress")
    with safe_open(str(ck / "model.safetensors"), "pt") as weights:
        head = weights.get_tensor("model.audio_model.model.ctc.ctc_lo.weight")
    init = QinYuForConditionalGeneration.from_pretrained(run.out / "init").state_dict()
    assert head.shape == (classes, 192)
    assert not torch.equal(head.float(), init["model.audio_model.model.ctc.ctc_lo.weight"].to(torch.bfloat16).float())
    # random word sequences as SLM ASR samples, their features on disk
    salad = read_prepared(prepared / "salad_asr.prepared.jsonl")
    assert len(salad) == 3 and all(s["task"] == "asr" and 3 <= len(s["messages"][-1]["content"].split()) <= 8
                                   for s in salad)
    assert all(np.load(prepared / s["audio"][0]["features"]).shape == (s["audio"][0]["frames"], 560) for s in salad)
    numbers = read_prepared(prepared / "numbers_asr.prepared.jsonl")
    assert len(numbers) == 3 and all(1 <= len(s["messages"][-1]["content"].split()) <= 2 for s in numbers)
    assert all(np.load(prepared / s["audio"][0]["features"]).shape == (s["audio"][0]["frames"], 560)
               for s in numbers)
    spliced = read_prepared(prepared / "spliced_asr.prepared.jsonl")
    assert len(spliced) == 3 and all(s["task"] == "asr" and s["id"].startswith("spliced-asr-") for s in spliced)
    assert all(np.load(prepared / s["audio"][0]["features"]).shape == (s["audio"][0]["frames"], 560)
               for s in spliced)
    # song requests typed too, each with its sung answer
    typed = read_prepared(prepared / "singing_text.prepared.jsonl")
    singing = {s["id"]: s for s in run.prepared_samples() if s["task"] == "singing"}
    assert typed and len(typed) == len(singing)
    for row in typed:
        source = singing[row["id"].removesuffix("-typed")]
        assert row["messages"][0]["content"] == source["meta"]["transcripts"][0]
        assert row["audio"] == source["audio"][1:]

    # every spoken QA and singing sample typed twice more in other train phrasings, with its own answer
    rephrased = read_prepared(prepared / "rephrased_text.prepared.jsonl")
    spoken = {s["id"]: s for s in run.prepared_samples() if s["task"] in ("chat", "singing")}
    assert len(rephrased) == 2 * len(spoken)
    for row in rephrased:
        source = spoken[row["id"].rsplit("-rephrased-", 1)[0]]
        assert row["messages"][-1] == source["messages"][-1] and row["audio"] == [source["audio"][-1]]
        assert "<|audio|>" not in row["messages"][0]["content"]

    # a finished run is all skips; --from redoes that step and every later one
    stamps = {s: (run.steps_dir / f"{s}.json").stat().st_mtime_ns for s in STEPS}
    run.run()
    assert all((run.steps_dir / f"{s}.json").stat().st_mtime_ns == stamps[s] for s in STEPS)
    (run.out / "stage2" / "left-from-before").write_text("")
    run.run(start_from="stage2")
    redone = {s for s in STEPS if (run.steps_dir / f"{s}.json").stat().st_mtime_ns != stamps[s]}
    assert redone == {"stage2", "assemble", "evaluate"}
    # a redone stage starts again from its init, not from its finished run (the trainer resumes)
    assert not (run.out / "stage2" / "left-from-before").exists()
    assert (run.out / "stage1" / "final").is_dir()

    # the simple encoder, with its output layer as the CTC classifier (the LM reads CTC logits)
    # and one frame per CTC token: the earlier steps reused, init to stage 0 run again
    import shutil

    simple = Speedrun(tmp_path / "simple", replace(tiny_config(), encoder_type="simple", encoder_emits_ctc=True,
                                                   encoder_ctc_compress=True), corpus=tiny_corpus, progress=False)
    (simple.out / "steps").mkdir(parents=True)
    for name in ("codec", "speaker_encoder", "prepared", "timbre"):
        shutil.copytree(run.out / name, simple.out / name)
    for name in ("tokenizer.json", "am.mvn", *(f"steps/{s}.json" for s in STEPS[:STEPS.index("init")])):
        shutil.copy(run.out / name, simple.out / name)
    simple.run(start_from="init", stop_after="stage0")
    config = json.loads((simple.out / "stage0" / "final" / "config.json").read_text())
    assert config["audio_encoder"]["type"] == "simple"
    assert config["audio_encoder_output_size"] == classes == config["audio_encoder"]["output_size"]
    assert config["audio_ctc_compress"] is True
    assert (simple.out / "steps" / "stage0.json").is_file() and not (simple.out / "steps" / "stage1.json").exists()

    # the shipped folder is self-contained: the demo answers its bundled spoken questions
    shipped = tmp_path / "shipped"
    from qinyu.demo import run_demo

    shutil.copytree(ck, shipped)
    shutil.rmtree(tmp_path / "run")
    answers = run_demo(tmp_path / "demo", model_dir=shipped, serve=False, max_steps=40)
    assert set(answers) == {"What is two plus five?", "Which noise does a cat make?",
                            "Please sing Twinkle Twinkle Little Star."}
    assert len(list((tmp_path / "demo").glob("reply-*.wav"))) == 3
    session = load_session(shipped)
    assert session.persona.system == "Your Voice Embedding: <|speaker|>" and session.persona.voice.shape == (192,)
    assert session.model.dtype == torch.float32  # bf16 on disk, fp32 on a CPU


def test_compressing_needs_an_encoder_that_emits_ctc(tmp_path):
    run = Speedrun(tmp_path / "run", SpeedrunConfig(encoder_ctc_compress=True), progress=False)
    (tmp_path / "run").mkdir()
    from qinyu.layout import bpe_tokenizer

    bpe_tokenizer(["what is two plus five"] * 4, vocab_size=300).save(str(tmp_path / "run" / "tokenizer.json"))
    with pytest.raises(SpeedrunError, match="needs encoder_emits_ctc"):
        run.step_init()


def test_ctc_embedding_goes_into_the_init_config_and_needs_sensevoice(tmp_path):
    from qinyu.layout import bpe_tokenizer, load_tokenizer
    from qinyu.model import QinYuForConditionalGeneration

    (tmp_path / "run").mkdir()
    bpe_tokenizer(["what is two plus five"] * 4, vocab_size=300).save(str(tmp_path / "run" / "tokenizer.json"))
    Speedrun(tmp_path / "run", SpeedrunConfig(encoder_ctc_embedding=True), progress=False).step_init()
    assert json.loads((tmp_path / "run" / "init" / "config.json").read_text())["audio_ctc_embedding"] is True
    model = QinYuForConditionalGeneration.from_pretrained(tmp_path / "run" / "init")
    classes = load_tokenizer(tmp_path / "run").get_vocab_size(with_added_tokens=False) + 1
    assert model.config.audio_ctc_embedding and model.audio_encoder.ctc.ctc_lo.out_features == classes
    simple = Speedrun(tmp_path / "run", SpeedrunConfig(encoder_ctc_embedding=True, encoder_type="simple"),
                      progress=False)
    with pytest.raises(SpeedrunError, match="encoder_ctc_embedding reads the posteriors of SenseVoice's CTC head"):
        simple.step_init()


def test_emitting_ctc_needs_the_simple_encoder(tmp_path):
    run = Speedrun(tmp_path / "run", SpeedrunConfig(encoder_emits_ctc=True), progress=False)
    with pytest.raises(SpeedrunError, match="set encoder_type 'simple'"):
        run.step_init()
    with pytest.raises(SpeedrunError, match="encoder_type must be 'sensevoice' or 'simple', got 'lstm'"):
        Speedrun(tmp_path / "run", SpeedrunConfig(encoder_type="lstm"), progress=False).step_init()


def test_bad_steps_and_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SpeedrunError, match="unknown step 'training'"):
        Speedrun(tmp_path / "run", tiny_config()).run(start_from="training")
    assert main(["speedrun", "--out", str(tmp_path / "r"), "--corpus", str(tmp_path / "nothing")]) == 2
    assert "not a nano corpus" in capsys.readouterr().err
    assert main(["speedrun", "--out", str(tmp_path / "r"), "--eval-limit", "0"]) == 2


def test_typed_questions_keep_the_spoken_answer_and_type_every_question():
    from qinyu.nano.speedrun import typed_questions

    sample = {"id": "qa-follow", "task": "chat", "voice": "cache/voice/v.npy",
              "messages": [{"role": "user", "content": "<|audio|>"},
                           {"role": "assistant", "content": "Three plus four is seven."},
                           {"role": "user", "content": "<|audio|>"},
                           {"role": "assistant", "content": "Then it's eight.<|audio|>"}],
              "audio": [{"role": "user", "features": "f0.npy"}, {"role": "user", "features": "f1.npy"},
                        {"role": "assistant", "codes": "c.npy"}],
              "meta": {"transcripts": ["How much is three plus four?", "What if I add one?", "Then it's eight."]}}
    typed = typed_questions(sample)
    assert [m["content"] for m in typed["messages"]] == [
        "How much is three plus four?", "Three plus four is seven.", "What if I add one?", "Then it's eight.<|audio|>"]
    assert typed["audio"] == [{"role": "assistant", "codes": "c.npy"}] and typed["voice"] == sample["voice"]
    assert typed["id"] == "qa-follow-typed"
    with pytest.raises(SpeedrunError, match="2 transcripts for 3 audios"):
        typed_questions({**sample, "meta": {"transcripts": ["a", "b"]}})


def test_text_arithmetic_covers_the_train_pairs_and_no_held_out_one():
    from qinyu.nano.corpus import QUESTIONS, heldout_pair
    from qinyu.nano.evaluate import numbers_in
    from qinyu.nano.speedrun import text_arithmetic

    train_add = [(a, b) for a in range(11) for b in range(11) if not heldout_pair(a, "+", b)]
    train_sub = [(a, b) for a in range(11) for b in range(a + 1) if not heldout_pair(a, "-", b)]
    for counting in (False, True):
        rows = text_arithmetic(counting)
        pairs = set()
        for r in rows:
            question, answer = (m["content"] for m in r["messages"])
            said = numbers_in(answer)  # a, b, (counting: the numbers counted,) the result
            a, b, c = said[0], said[1], said[-1]
            op = "+" if " plus " in answer else "-"
            assert not heldout_pair(a, op, b) and c == (a + b if op == "+" else a - b)
            assert len(said) == (3 + b if counting else 3)
            assert numbers_in(question) in ([a, b], [b, a])  # "take {b} from {a}" says them the other way round
            assert r["audio"] == [] and "<|audio|>" not in question + answer
            pairs.add((a, op, b))
        assert pairs == {(a, "+", b) for a, b in train_add} | {(a, "-", b) for a, b in train_sub}
        assert len(rows) == len(train_add) * len(QUESTIONS["add"][0]) + len(train_sub) * len(QUESTIONS["sub"][0])


NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"}


def test_number_sequences_are_one_or_two_number_words_at_random():
    from qinyu.nano.speedrun import number_sequences

    lines = number_sequences(400, seed=3)
    assert len(lines) == 400 and lines == number_sequences(400, seed=3) and lines != number_sequences(400, seed=4)
    assert {len(line.split()) for line in lines} == {1, 2}
    assert {w for line in lines for w in line.split()} == NUMBER_WORDS  # all 21, nothing else
    assert number_sequences(0) == []


def test_word_salad_draws_number_words_and_the_transcripts_words_at_random():
    import re

    from qinyu.nano.speedrun import word_salad

    texts = ["Um, can you tell me what two plus three is?", "What's the capital of France?"]
    salad = word_salad(texts, 300, seed=1)
    assert len(salad) == 300 and salad == word_salad(texts, 300, seed=1) and salad != word_salad(texts, 300, seed=2)
    allowed = {w for t in texts for w in re.findall(r"[a-z']+", t.lower())}
    words = [w for line in salad for w in line.split()]
    assert all(3 <= len(line.split()) <= 8 for line in salad)
    assert set(words) <= allowed | NUMBER_WORDS and set(words) >= NUMBER_WORDS  # every number word occurs
    assert 0.4 < sum(w in NUMBER_WORDS for w in words) / len(words) < 0.65
    assert len(set(salad)) > 290  # sequences, not the corpus's sentence frames
    with pytest.raises(SpeedrunError, match="no words"):
        word_salad(["?!"], 3)


def test_word_salad_draws_general_english_words_at_the_given_share_and_never_a_held_out_trigram(monkeypatch):
    from qinyu.nano.rephrase import says_heldout_trigram
    from qinyu.nano.speedrun import general_words, word_salad

    general = general_words(3000)
    assert len(general) == 3000 and general[:3] == ["the", "to", "and"]  # most frequent first
    assert all(re.fullmatch(r"[a-z]+(?:'[a-z]+)?", w) for w in general) and "don't" in general
    assert general_words(0) == []
    texts = ["Um, can you tell me what two plus three is?", "What's the capital of France?"]
    corpus = {w for t in texts for w in re.findall(r"[a-z']+", t.lower())}
    salad = word_salad(texts, 2000, seed=1, general=general, general_share=0.5)
    assert salad == word_salad(texts, 2000, seed=1, general=general, general_share=0.5)
    words = [w for line in salad for w in line.split()]
    assert set(words) <= corpus | NUMBER_WORDS | set(general)
    others = [w for w in words if w not in NUMBER_WORDS and w not in corpus]  # general words only
    assert 0.2 < len(others) / len(words) < 0.3  # half of the non-number half (minus overlaps)
    assert len(set(others)) > 1500  # many different words, not a few
    assert not any(says_heldout_trigram(line) for line in salad)
    # the filter: a general list that is one held-out phrasing's words makes it say that phrasing
    phrase = "could you work out".split()
    lines = word_salad(["x"], 300, seed=2, general=phrase, general_share=1.0, numbers=0)
    assert not any("could you work out" in line for line in lines)
    assert word_salad(texts, 50, seed=1) == word_salad(texts, 50, seed=1, general=[], general_share=0.5)
    monkeypatch.setattr("qinyu.nano.rephrase.says_heldout_trigram", lambda text: True)  # every draw rejected
    with pytest.raises(SpeedrunError, match="only 0 of 5 random word sequences avoid the held-out phrasings"):
        word_salad(texts, 5, seed=1)


def test_spliced_sentences_join_two_transcripts_and_never_say_a_held_out_trigram():
    import re

    from qinyu.nano.rephrase import says_heldout_trigram
    from qinyu.nano.speedrun import spliced_sentences

    texts = ["Um, can you tell me what two plus three is?", "What's the capital of France?",
             "Which colour is a tomato?", "Tell me something about your ship, captain.",
             "Name the capital of Japan"]  # (the last is a held-out phrasing, to check the filter)
    lines = spliced_sentences(texts, 400, seed=1, substitute=0.0)
    assert len(lines) == 400 and lines == spliced_sentences(texts, 400, seed=1, substitute=0.0)
    assert lines != spliced_sentences(texts, 400, seed=2, substitute=0.0)
    starts = [t.split() for t in texts]
    for line in lines:  # a start of one transcript, then an end of one
        words = line.split()
        assert line[0].isupper() and not says_heldout_trigram(line)
        assert any(any(words[:i] == [s[0].capitalize(), *s[1:i]] or words[:i] == s[:i] for s in starts)
                   and any(words[i:] == s[-(len(words) - i):] for s in starts) for i in range(1, len(words)))
    assert len(set(lines)) > 40  # many more sentences than the five
    assert any("name the capital of" in line.lower() for line in texts) and \
        not any("name the capital of" in line.lower() for line in lines)
    swapped = spliced_sentences(texts, 400, seed=1, substitute=0.5)
    allowed = {w for t in texts for w in re.findall(r"[a-z']+", t.lower())} | NUMBER_WORDS
    assert {re.sub(r"[^a-z']", "", w.lower()) for line in swapped for w in line.split()} - {""} <= allowed
    assert any(w in NUMBER_WORDS - {"two", "three"} for line in swapped for w in line.lower().split())
    assert spliced_sentences(texts, 0) == []
    with pytest.raises(SpeedrunError, match="no sentences of two words"):
        spliced_sentences(["Hello"], 3)


def test_reframing_keeps_numbers_operations_and_what_is_asked_about_and_shakes_the_rest():
    import random

    from qinyu.nano.speedrun import answer_words, filler_words, reframe, reframed_questions

    rng = random.Random(0)
    fillers = ["please", "tell", "so"]
    outs = [reframe("Which colour is a tomato?", {"a", "tomato", "is", "red"}, fillers, rng) for _ in range(200)]
    assert all({"tomato", "is"} <= {w.strip("?.,").lower() for w in out.split()} for out in outs)
    assert any("colour" not in out.lower() for out in outs)  # frame words get dropped ...
    assert any(w in out.split() for out in outs for w in fillers)  # ... and fillers put in
    outs = [reframe("What do you get if you take two from nine?", set(), fillers, rng) for _ in range(200)]
    assert all({"take", "two", "from", "nine"} <= {w.strip("?").lower() for w in out.split()} for out in outs)
    assert all(out[0].isupper() for out in outs)

    sample = {"id": "qa-1", "task": "chat", "messages": [
        {"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": "Snow is white."},
        {"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": "Grass is green.<|audio|>"}],
        "audio": [{"role": "user"}, {"role": "user"}, {"role": "assistant", "codes": "c.npy"}],
        "meta": {"transcripts": ["What colour is snow?", "And what about grass?", "Grass is green."],
                 "nano": {"sub": "follow-fact"}}}
    assert answer_words(sample) == {"snow", "is", "white", "grass", "green"}
    # no number, operation, answer or greeting word is a filler
    assert filler_words(["Thanks, do you know two plus snow please?"], answer_words(sample)) == ["do", "know", "please"]
    rows = reframed_questions([sample], seed=1, fact_copies=4)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    for row in rows:
        assert row["audio"] == [sample["audio"][2]] and row["messages"][1] == sample["messages"][1]
        assert "snow" in row["messages"][0]["content"].lower() and "grass" in row["messages"][2]["content"].lower()


def test_a_role_play_line_becomes_tts_in_its_characters_voice():
    from qinyu.nano.speedrun import line_as_tts

    sample = {"id": "rp-nova-1", "task": "roleplay", "voice": "voices/nova.npy", "meta": {"voice": "nova"},
              "messages": [{"role": "system", "content": "Your Name: Captain Nova"},
                           {"role": "user", "content": "<|audio|>"},
                           {"role": "assistant", "content": "At the station, of course.<|audio|>"}],
              "audio": [{"role": "user", "features": "f.npy"}, {"role": "assistant", "codes": "c.npy"}]}
    tts = line_as_tts(sample)
    assert tts["task"] == "tts" and tts["voice"] == "voices/nova.npy" and tts["id"] == "rp-nova-1-tts"
    assert tts["messages"] == [{"role": "user", "content": "Convert the text to speech.\nAt the station, of course."},
                               {"role": "assistant", "content": "At the station, of course.<|audio|>"}]
    assert tts["audio"] == [{"role": "assistant", "codes": "c.npy"}]
    with pytest.raises(SpeedrunError, match="does not end with a spoken assistant line"):
        line_as_tts({**sample, "messages": sample["messages"][:2]})


def test_extra_voices_speak_the_same_whatever_the_lookahead():
    """Every voice is drawn before synthesis starts and a fresh espeak-ng engine speaks the
    texts in order, so requests sent eight ahead give exactly what one at a time gives."""
    import numpy as np

    from qinyu.nano.speedrun import extra_voices

    texts = ["three plus four", "seven", "what colour is the sky", "twelve", "hello there"]
    one = list(extra_voices(texts, seed=5, progress=False, ahead=1))
    eight = list(extra_voices(texts, seed=5, progress=False, ahead=8))
    assert [t for _, t in one] == [t for _, t in eight] == texts
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(one, eight))
    other_seed = list(extra_voices(texts, seed=6, progress=False))
    assert not all(len(a) == len(b) and np.array_equal(a, b) for (a, _), (b, _) in zip(one, other_seed))


def test_the_codec_is_fitted_on_a_seeded_draw_of_whole_files_up_to_its_seconds(tmp_path):
    import numpy as np
    import soundfile as sf

    from qinyu.nano.speedrun import fit_selection

    files = []
    for i, seconds in enumerate([1.0, 2.0, 0.5, 3.0, 1.5, 2.5]):
        files.append(tmp_path / f"{i}.wav")
        sf.write(str(files[-1]), np.zeros(int(16000 * seconds), np.float32), 16000)
    assert fit_selection(files, None) == files
    assert fit_selection(files, 100.0) == files
    chosen = fit_selection(files, 4.0, seed=3)
    total = sum(sf.info(str(f)).duration for f in chosen)
    assert 3.0 <= total <= 4.0 and chosen == [f for f in files if f in chosen]  # nearly full, in the given order
    assert fit_selection(files, 4.0, seed=3) == chosen
    assert {tuple(fit_selection(files, 4.0, seed=s)) for s in range(8)} != {tuple(chosen)}
