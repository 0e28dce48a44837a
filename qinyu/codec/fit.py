"""Fitting the nano codec on synthetic espeak-ng speech (English and Mandarin pinyin voices)."""

from __future__ import annotations

import random
import time

from ..audio.espeak import espeak

EN_SUBJECTS = ["The old man", "My sister", "A small dog", "The teacher", "Our neighbour", "The little girl",
               "A tired student", "The captain", "Her brother", "The baker", "Everyone here", "The young singer"]
EN_VERBS = ["walked to", "looked at", "talked about", "painted", "carried", "forgot", "found", "cleaned",
            "remembered", "sold", "watched", "followed"]
EN_OBJECTS = ["the red house", "a bright blue boat", "the noisy market", "seven yellow apples", "the quiet river",
              "an open window", "the tall green tree", "a cup of hot tea", "the morning train", "the silver key",
              "a funny story", "the mountain road"]
EN_ENDINGS = ["yesterday.", "before dinner.", "in the rain.", "with a smile.", "very slowly.", "after school.",
              "on Sunday morning.", "without a word.", "near the station.", "all day long."]
EN_QUESTIONS = ["Could you tell me where the library is?", "What time does the show begin tonight?",
                "Why is the sky so dark today?", "Would you like to sing a song with me?",
                "How many people came to the party?", "Do you remember the name of that street?"]
PINYIN = ["ni3 hao3, jin1 tian1 tian1 qi4 zhen1 bu2 cuo4.", "wo3 xiang3 he1 yi4 bei1 re4 cha2.",
          "qing3 wen4, huo3 che1 zhan4 zai4 na3 li3?", "ta1 mei3 tian1 zao3 shang4 dou1 chang4 ge1.",
          "wo3 men5 ming2 tian1 yi4 qi3 qu4 gong1 yuan2 ba5.", "zhe4 ben3 shu1 fei1 chang2 you3 yi4 si5.",
          "ni3 xi3 huan1 shen2 me5 yan2 se4?", "lao3 shi1 shuo1 de5 hua4 hen3 you3 dao4 li3.",
          "xiao3 gou3 zai4 hua1 yuan2 li3 pao3 lai2 pao3 qu4.", "ta1 de5 sheng1 yin1 hen3 wen1 rou2."]
# Variants go on "en", not "en-gb": espeak-ng ignores a variant on en-gb (same audio as plain en-gb).
EN_VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3", "en+f2", "en-us+f4", "en+m7", "en-us+klatt"]
ZH_VOICES = ["cmn-latn-pinyin", "cmn-latn-pinyin+f3", "cmn-latn-pinyin+m3"]


def sentence(rng: random.Random) -> tuple[str, str]:
    """A random (text, language) pair; about one in four is Mandarin pinyin."""
    r = rng.random()
    if r < 0.25:
        return rng.choice(PINYIN), "zh"
    if r < 0.35:
        return rng.choice(EN_QUESTIONS), "en"
    return f"{rng.choice(EN_SUBJECTS)} {rng.choice(EN_VERBS)} {rng.choice(EN_OBJECTS)} {rng.choice(EN_ENDINGS)}", "en"


def espeak_corpus(seconds: float, seed: int = 0, progress=None):
    """Yield (wav, sample_rate, text, voice) until ``seconds`` of speech are produced."""
    rng = random.Random(seed)
    total = 0.0
    while total < seconds:
        text, lang = sentence(rng)
        voice = rng.choice(ZH_VOICES if lang == "zh" else EN_VOICES)
        wav, sr = espeak(text, voice=voice, pitch=rng.randint(25, 75), speed=rng.randint(140, 190))
        total += len(wav) / sr
        if progress:
            progress(min(total, seconds))
        yield wav, sr, text, voice


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def audio_files(directory) -> list:
    from pathlib import Path

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"audio folder not found: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(AUDIO_SUFFIXES)} files under {directory}")
    return files


def fit_nano_codec(out_dir, minutes: float = 10.0, iterations: int = 20, seed: int = 0, frame_rate: float = 12.5,
                   audio_dir=None, files=None):
    """Fit the nano codec on the audio files under ``audio_dir`` (or the list ``files``),
    or else on ``minutes`` of synthesised espeak-ng speech, and save it to ``out_dir``."""
    from tqdm import tqdm

    from ..audio.io import load_audio
    from .nano import NanoCodec, NanoCodecConfig

    start = time.time()
    if files is not None:
        if not files:
            raise FileNotFoundError("the list of audio files to fit the codec on is empty")
        corpus = [load_audio(f) for f in tqdm(files, desc="reading audio", unit="file")]
    elif audio_dir is not None:
        corpus = [load_audio(f) for f in tqdm(audio_files(audio_dir), desc="reading audio", unit="file")]
    else:
        bar = tqdm(total=round(minutes * 60), desc="synthesising speech", unit="s")

        def advance(total):
            bar.update(round(total) - bar.n)

        corpus = [(wav, sr) for wav, sr, _, _ in espeak_corpus(minutes * 60, seed=seed, progress=advance)]
        bar.close()
    stages = tqdm(total=7, desc="fitting 7 codebooks (k-means)", unit="codebook")

    def stage_done(stage, mse):
        stages.update(1)
        stages.set_postfix(residual_mse=f"{mse:.3f}")

    codec = NanoCodec.fit(corpus, NanoCodecConfig(frame_rate=frame_rate), iterations=iterations, seed=seed,
                          progress=stage_done)
    stages.close()
    codec.info["fit_seconds"] = round(time.time() - start, 1)
    codec.info["source"] = (f"{len(files)} listed audio files" if files is not None else str(audio_dir)
                            if audio_dir is not None else f"espeak-ng, {minutes} min, seed {seed}")
    codec.save(out_dir)
    return codec
