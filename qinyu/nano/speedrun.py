"""The qinyu-nano speedrun (``make speedrun`` = ``qinyu speedrun``): everything from
nothing on 2 CPU cores, through the same code paths as the official scale.

    corpus -> codec -> tokenizer -> speaker -> cmvn -> prepare -> timbre -> init
           -> encoder -> stage0 -> stage1 -> stage2 -> assemble -> evaluate

Each step writes ``OUT/steps/<step>.json`` (what it made, how long it took) when it
finishes; a re-run skips finished steps, so a killed run resumes at the step it was in
(the corpus, prepare and trainer steps also resume inside themselves). ``--from STEP``
redoes a step and everything after it. ``OUT/speedrun.json`` sums the times.

The settings (:class:`SpeedrunConfig`) are the ones that made the shipped
``checkpoints/qinyu-nano``; its ``report.md`` is what the ``evaluate`` step wrote.
"""

from __future__ import annotations

import functools
import json
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .rephrase import rephrase

STEPS = ("corpus", "codec", "tokenizer", "speaker", "cmvn", "prepare", "timbre", "init", "encoder",
         "stage0", "stage1", "stage2", "assemble", "evaluate")


class SpeedrunError(RuntimeError):
    pass


@dataclass
class SpeedrunConfig:
    seed: int = 0
    corpus_scale: float = 1.0
    # measured and left off (run O: role-play nearest voice 41.7 % against run N's 52.1; TTS prompts
    # in the characters' own vectors 52.1 % against run K's 45.8): every train QA reply read again by
    # one of the eight role-play voices as a TTS pair in that voice (``NanoCharacterTTS``), so a text
    # says nothing about the voice reading it; 55 s more over the corpus and prepare steps. Again with
    # the voice at every audio step (run U): nearest voice 37.5 %, notes 12.6 %, 45.1 min; left off
    corpus_character_tts: bool = False
    # sums and differences answered by counting on from the first operand ("Three plus two: four,
    # five. Five."; ``qinyu.nano.corpus.arithmetic_answer``), in the spoken QA and ``arith_text``.
    # Measured and left off for now (run Z4, docs/nano.md "Counting on"): spoken sums and
    # differences of held-out pairs 4 of 25 right (run Z3 the same session: 0), of train pairs in
    # unseen phrasings 7 of 10 (4); most replies counted right but stopped early or late, and
    # forced-choice intelligibility missed its target by 5.4 (run Z5, again: QA 30.8 %, held-out
    # pairs 7 of 29 with the follow-ups, forced choice missed by 6.8)
    corpus_counting: bool = False
    codec_iterations: int = 8
    # the codec's k-means sees at most this much of the assistant audio (a seeded draw of whole
    # files); None: all of it (3,104 s by default). The counted arithmetic replies of
    # ``corpus_counting`` grew it to 4,333 s and the codec step from 106 to 142 s (run Z4): 3100
    # keeps that step as it was
    codec_fit_seconds: float | None = None
    bpe_vocab: int = 512
    # the number words 0..20 as one token each, as Qwen3's vocabulary has them: trained on the corpus
    # alone, the 512-entry BPE split "fifteen" into "f i f teen" and "sixteen" into "s i xt een"
    bpe_whole_numbers: bool = True
    # CAM++ sized for speed and the 30 MB budget (the official size is ~7 M parameters)
    speaker_config: dict = field(default_factory=lambda: {"growth_rate": 16, "bn_size": 2, "init_channels": 32,
                                                          "block_layers": [4, 6, 4]})
    speaker_steps: int = 250
    speaker_codec_share: float = 0.5  # this share of the assistant-side clips is added again through the codec
    # bf16 autocast for CAM++'s training steps and for the speaker vectors of prepare and of the
    # encoder step's re-spoken requests (2.2x and 2.6x fp32 on these 2 cores; a vector's cosine to
    # its fp32 one 0.9996); the evaluation, CAM++ as the judge, embeds in fp32 (docs/nano.md)
    speaker_dtype: str = "bf16"
    cmvn_files: int = 400
    timbre_config: dict = field(default_factory=lambda: {"hidden": 128, "filter_channels": 256, "blocks": 2,
                                                         "heads": 2})
    timbre_steps: int = 1500
    # the audio encoder: "sensevoice" (SenseVoiceSmall's SAN-M, small: the nano preset) or "simple"
    # (the plain Transformer earlier runs used, presets.NANO_SIMPLE_ENCODER)
    encoder_type: str = "sensevoice"
    # 3,000 steps in batches of like-length utterances (``encoder_length_pool`` batches sorted per
    # pool): 1.44x the steps per second of random batches, so in about the time 2,000 took before
    encoder_steps: int = 3000
    encoder_length_pool: int = 50
    # bf16 autocast for the CTC step and the stages: on these 2 cores (AVX-512 BF16) 1.8x the CTC
    # steps and 1.5x the stage tokens per second of fp32 (docs/nano.md)
    encoder_dtype: str = "bf16"
    encoder_extra_utterances: int = 2000  # train transcripts re-spoken by other espeak-ng voices (see step_encoder)
    encoder_extra_requests: int = 1500  # single-turn spoken questions and singing requests re-spoken likewise
    # measured and left off for now: this many more song requests re-spoken alone. Drawn with
    # the questions, requests are 216 of the 1,500 (the train split has 64 song requests to 520
    # spoken questions), and run X answered 6 of its 12 held-out requests with no song ("Let's hear
    # London Bridge. Can you sing it?" -> "A tomato is red."). With 400 (runs Y and Z): 1 and 3 of 12,
    # singing note accuracy 54.6 and 43.1 % against 7.5, QA 16.7 and 24.4 % against runs W and X's
    # 32.1 and 26.9; run Z, a fresh clone paying with 1,600 re-spoken transcripts and 1,375 stage-1
    # steps, took 48.1 min, mostly the machine at that hour; run Z2, the same again, 45.5 min with
    # forced choice missed by 0.9 (docs/nano.md, "Song requests ..."); with the grouped attention
    # kernel, runs Y2 (X's settings) and Y3 (1,600 transcripts, stage 1 at 1,300) met every target
    # rule but the time: 45.4 and 46.4 min, notes 54.3 and 46.0 %, QA 24.4 and 29.5 %; run Y5 (cheaper
    # kernels, 300 fewer timbre and CTC steps, 150 fewer requests): 47.5 min on a slow hour, notes 54.3 %,
    # forced choice missed by 2.4; run Y7 (today's code, Y2's settings): notes 73.1 %, 10 of 12 songs
    # right, but 46.1 min and forced choice missed by 0.9 (docs/nano.md, "Cheaper explicit attention");
    # run Y8 (espeak-ng's library, bf16 user voices in the evaluation): 48.3 min on a slow hour, every
    # target rule met but the time, notes 18.1 %, nearest voice 79.2 % (docs/nano.md, "espeak-ng's library")
    encoder_extra_song_requests: int = 0
    # this share of the re-spoken questions says a reframed question (``reframe``: words of the
    # sentence frame dropped, others inserted), as does ``reframed_text``: the LM learns that the
    # answer hangs on the thing asked about, not on the train phrasings' frames
    encoder_reframe_share: float = 0.5
    # this share of the re-spoken single-turn questions and song requests is said in another train
    # phrasing first (``qinyu.nano.rephrase``, as an LLM rewrite would vary them; then reframed as
    # above), as is ``rephrased_text``: the corpus asks each thing in a few fixed frames
    encoder_rephrase_share: float = 0.5
    # random word sequences (``word_salad``) and one or two number words alone
    # (``number_sequences``) in other voices, for CTC and as ``salad_asr`` / ``numbers_asr`` SLM
    # samples: nothing to guess from a sentence frame, so the encoder and the LM learn to hear every
    # word (docs/nano.md, "Hearing")
    encoder_salad_utterances: int = 3000
    # measured and left off (run L: ASR CER 30.2 % against run K's 27.9; held-out utterances in
    # unheard phrasings 42.4 % against 39.1): the word sequences also draw from the most frequent
    # English words (``general_words``, the wordfreq package's list; 0 = the corpus's words only),
    # this share of their non-number words. The corpus has about 600 words and a held-out phrasing
    # says words no train sentence has ("Could you work out ..."); heard once or twice each in
    # 3,000 sequences, "work out" was still not transcribed
    encoder_salad_general_words: int = 0
    encoder_salad_general_share: float = 0.5
    encoder_number_utterances: int = 3000
    # train user utterances spliced (the start of one, the end of another, a few words swapped:
    # ``spliced_sentences``) in other voices, for CTC and as ``spliced_asr`` SLM samples: sentences
    # no one memorised, so the LM reads them instead of answering with the nearest train sentence
    # 6,000 (was 3,000), each taken half as often by the stages (the same share of their data,
    # twice as many sentences): run W, QA 32.1 % and ASR CER 23.3 % against run T's 16.7 and 27.0
    # (spoken facts 13 of 22 against 6); 87 s more in the encoder step (docs/nano.md)
    encoder_spliced_utterances: int = 6000
    # measured and left off (simple encoder only): its output layer as the CTC classifier (the LM
    # reads CTC logits), and one frame per CTC token
    encoder_emits_ctc: bool = False
    encoder_ctc_compress: bool = False
    # measured and left off (run J: ASR CER 40.0 %, as without it): the LM reads each frame with its
    # own text embeddings weighted by the encoder's CTC posteriors added (``audio_ctc_embedding``,
    # SenseVoice encoder only: its CTC head gives the posteriors)
    encoder_ctc_embedding: bool = False
    # every assistant audio step's input also carries the projected assistant voice (config
    # ``speaker_at_audio_steps``, a qinyu extension): given once in the system prompt, the LM did not
    # speak the vector it was given (bench/voices.py: 11.5 % nearest the given voice of 8, chance
    # 12.5; with it 47.9 %; docs/nano.md)
    voice_at_audio_steps: bool = True
    # the three SLM stages: recipe fields (qinyu.train.recipe.Recipe). Measured and left off: the
    # recipe's audio_augment (SpecAugment of the user speech at every step; run V: ASR CER 25.2 %
    # against run T's 27.0, QA 16.7 % as T, forced choice 83.3 % against 98.7, missing its target)
    stage0: dict = field(default_factory=lambda: {"steps": 60, "batch_size": 4, "lr": 2e-3, "warmup_ratio": 0.05,
                                                  "train_audio_embeddings": True, "dtype": "bf16"})
    # stages 1 and 2 keep the CTC-trained encoder frozen (the recipe's default, as the paper keeps
    # SenseVoice frozen): fine-tuning it on the 20 train user voices without augmentation undoes
    # what the augmented CTC step taught it about unheard voices
    # lr: at 3e-3 the LM did not learn to read numbers off the frames (5 of 51 held-out ASR
    # utterances right), at 1e-3 it did (28) but spoke and answered worse in 750 + 450 steps; 2e-3 /
    # 1.5e-3 with bf16's extra steps (docs/nano.md, "Hearing"). 1,400 steps, in the time packed
    # attention freed: run R (QA 26.9 %, ASR CER 25.1 %) against 1,100 in run Q (15.4 %, 28.1 %)
    stage1: dict = field(default_factory=lambda: {"steps": 1400, "batch_size": 4, "lr": 2e-3, "warmup_ratio": 0.03,
                                                  "dtype": "bf16"})
    # stage 2 at 2e-3 with the TTS pairs twice: at 1.5e-3 and once, forced-choice intelligibility fell
    # to 82.2 % against the codec's 98.7 % (94.9 % with these; docs/nano.md). 600 steps (was 650): the
    # same steps took 428 and 492 s in runs R and S, so 35 s of margin under the 45 minutes
    stage2: dict = field(default_factory=lambda: {"steps": 600, "batch_size": 4, "lr": 2e-3, "warmup_ratio": 0.03,
                                                  "weight_decay": 0.1, "dtype": "bf16"})
    max_length: int = 1024  # role-play lines carry their script's history: up to ~850 tokens
    # the data of each stage: {prepared file stem: weight (repeats per epoch)}; the stems are the
    # tasks of the train split (split by ``_split_by_task``), "train" (all of it), "extra_asr",
    # "extra_chat" and "extra_singing" (the encoder step's re-spoken transcripts and requests),
    # "salad_asr", "numbers_asr" and "spliced_asr" (the encoder step's random word sequences,
    # ``word_salad``, number words alone, ``number_sequences``, and spliced train utterances,
    # ``spliced_sentences``), "chat_text" and
    # "singing_text" (spoken QA and song requests typed, ``typed_questions``), "reframed_text"
    # (typed QA with reframed questions, ``reframed_questions``) and "arith_text"
    # (typed arithmetic answered in text, ``text_arithmetic``), "voice_tts" (role-play lines read
    # in their character's voice, ``line_as_tts``). Stage 1 is speech-text pre-training (ASR, TTS,
    # spoken QA: the LM learns to read the encoder, to answer and to speak), stage 2 SFT on
    # everything. arith_text stays out of stage 2: the run with it there (x2) wrote spoken
    # answers that ran on past their end ("Two plus four is seven. twelve.") and missed the
    # forced-choice intelligibility target by 3 points (docs/nano.md). voice_tts twice in stages 1
    # and 2 was measured (run M, a fresh clone: nearest voice 52.1 % as run K, forced choice 82.2 %
    # against 98.7, missing the intelligibility target) and left off (docs/nano.md, "Role-play
    # voices")
    stage_data: dict = field(default_factory=lambda: {
        0: {"asr": 1.0, "extra_asr": 1.0, "salad_asr": 1.0, "numbers_asr": 1.0, "spliced_asr": 0.5},
        1: {"asr": 1.0, "extra_asr": 1.0, "salad_asr": 1.0, "numbers_asr": 1.0, "spliced_asr": 0.5, "tts": 1.0,
            "chat": 1.0, "extra_chat": 1.0, "chat_text": 1.0, "reframed_text": 1.0, "rephrased_text": 1.0,
            "arith_text": 2.0, "voice_tts": 1.0, "singing": 1.0},
        2: {"train": 1.0, "singing": 3.0, "extra_singing": 1.0, "extra_asr": 0.5, "numbers_asr": 0.5,
            "spliced_asr": 0.25, "extra_chat": 1.0, "reframed_text": 1.0, "rephrased_text": 1.0, "voice_tts": 1.0,
            "tts": 1.0}})
    eval_limit: int | None = None
    ship_dtype: str = "bf16"


def log(message: str) -> None:
    print(f"[speedrun {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Speedrun:
    def __init__(self, out, config: SpeedrunConfig | None = None, corpus=None, progress: bool = True):
        self.out = Path(out)
        self.config = config or SpeedrunConfig()
        self.corpus = Path(corpus) if corpus else self.out / "corpus"
        self.progress = progress
        self.steps_dir = self.out / "steps"
        self.rendered = None  # the stages' rendered data, shared between them (a RenderedFiles)

    # -- paths --------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint"

    def done(self, step: str) -> dict | None:
        path = self.steps_dir / f"{step}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    # -- running ------------------------------------------------------------------
    def run(self, start_from: str | None = None, stop_after: str | None = None) -> dict:
        for name in (start_from, stop_after):
            if name is not None and name not in STEPS:
                raise SpeedrunError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
        self.steps_dir.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        if start_from:
            for step in STEPS[STEPS.index(start_from):]:
                (self.steps_dir / f"{step}.json").unlink(missing_ok=True)
                if step.startswith("stage"):  # else the trainer would resume the finished stage, not redo it
                    shutil.rmtree(self.out / step, ignore_errors=True)
        for i, step in enumerate(STEPS, 1):
            if self.done(step):
                log(f"{i:2d}/{len(STEPS)} {step}: done before ({self.done(step)['seconds']} s), skipped")
            else:
                log(f"{i:2d}/{len(STEPS)} {step} ...")
                start = time.time()
                result = getattr(self, f"step_{step}")() or {}
                record = {**result, "step": step, "seconds": round(time.time() - start, 1)}
                (self.steps_dir / f"{step}.json").write_text(json.dumps(record, indent=1, default=str))
                log(f"{i:2d}/{len(STEPS)} {step}: {record['seconds']} s  {json.dumps(result, default=str)[:300]}")
            if step == stop_after:
                break
        records = [self.done(s) for s in STEPS if self.done(s)]
        summary = {"steps": {r["step"]: r["seconds"] for r in records},
                   "total_seconds": round(sum(r["seconds"] for r in records), 1)}
        (self.out / "speedrun.json").write_text(json.dumps(summary, indent=1))
        log(f"total {summary['total_seconds'] / 60:.1f} min over {len(records)} step(s)")
        return summary

    # -- data ---------------------------------------------------------------------
    def train_samples(self) -> list[dict]:
        from .corpus import read_jsonl

        return read_jsonl(self.corpus / "train.jsonl")

    def step_corpus(self) -> dict:
        from .corpus import build_corpus

        summary = build_corpus(self.corpus, seed=self.config.seed, scale=self.config.corpus_scale,
                               progress=self.progress, character_tts=self.config.corpus_character_tts,
                               counting=self.config.corpus_counting)
        if not summary.ok:
            raise SpeedrunError(f"the corpus has {len(summary.failures)} failed item(s) and "
                                f"{len(summary.problems)} problem(s); run again to fill the gaps")
        return {"counts": summary.counts, "hours": summary.hours}

    def assistant_audio(self) -> list[tuple[Path, dict]]:
        """(wav path, sample) of every assistant audio of the train split, once each, but for
        the character TTS pairs: the codec and CAM++ are fitted on the voices' own speech
        (role-play lines), and the QA replies read again in those voices would make both steps
        slower without a voice they have not heard."""
        from .corpus import CHARACTER_TTS

        seen, out = set(), []
        for s in self.train_samples():
            if s["meta"].get("nano", {}).get("kind") == CHARACTER_TTS:
                continue
            roles = [m["role"] for m in s["messages"] for _ in range(m["content"].count("<|audio|>"))]
            for role, rel in zip(roles, s["audios"]):
                if role == "assistant" and rel not in seen:
                    seen.add(rel)
                    out.append((self.corpus / rel, s))
        return out

    def step_codec(self) -> dict:
        from ..codec.fit import fit_nano_codec

        files = fit_selection([p for p, _ in self.assistant_audio()], self.config.codec_fit_seconds,
                              seed=self.config.seed)
        codec = fit_nano_codec(self.out / "codec", iterations=self.config.codec_iterations, seed=self.config.seed,
                               files=files)
        return {"files": len(files), "fitted_on_seconds": codec.info.get("fitted_on_seconds")}

    def step_tokenizer(self) -> dict:
        from ..layout import bpe_tokenizer

        texts = [m["content"].replace("<|audio|>", " ") for s in self.train_samples() for m in s["messages"]]
        whole = sorted(_number_words()) if self.config.bpe_whole_numbers else []
        tok = bpe_tokenizer(texts, self.config.bpe_vocab, whole_words=whole)
        tok.save(str(self.out / "tokenizer.json"))
        bytes_ = sum(len(t.encode()) for t in texts)
        tokens = sum(len(tok.encode(t).ids) for t in texts)
        return {"vocab": tok.get_vocab_size(), "bytes_per_token": round(bytes_ / max(1, tokens), 2)}

    def step_speaker(self) -> dict:
        """CAM++ from scratch on every train clip, labelled with the voice that speaks it
        (assistant, role-play and singing voices from ``meta.voice``, users from
        ``meta.user_voice``)."""
        from tqdm import tqdm

        from ..audio.io import load_audio
        from ..codec import load_codec
        from ..voice.campplus import CAMPPlusConfig
        from ..voice.speaker_train import train_speaker_encoder

        clips = []
        for path, sample in self.assistant_audio():
            voice = sample["meta"].get("voice")
            if voice:
                clips.append((*load_audio(path, 16000), voice))
        rng = random.Random(self.config.seed)
        # the same voices after the codec: generated speech reaches the speaker encoder through the
        # codec, which changes what CAM++ hears (trained on clean clips only, it named the right
        # role-play voice for 46 of 48 clean held-out lines but 12 of 48 codec-resynthesised ones)
        codec = load_codec(self.out / "codec")
        for wav, sr, voice in tqdm(rng.sample(clips, int(len(clips) * self.config.speaker_codec_share)),
                                   desc="codec copies for CAM++", unit="clip", disable=not self.progress):
            clips.append((codec.decode(codec.encode(wav, sr)), codec.output_sample_rate, voice))
        users = [(self.corpus / s["audios"][0], s["meta"]["user_voice"]) for s in self.train_samples()
                 if s["task"] == "chat" and s["meta"].get("user_voice")]
        for path, voice in rng.sample(users, min(len(users), len(clips) // 2)):
            clips.append((*load_audio(path, 16000), voice))
        bar = _bar(self.config.speaker_steps, "CAM++ speaker encoder", self.progress)

        def progress(step, steps, loss, accuracy):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}")

        encoder = train_speaker_encoder(clips, CAMPPlusConfig.from_dict(self.config.speaker_config),
                                        steps=self.config.speaker_steps, seed=self.config.seed,
                                        dtype=self.config.speaker_dtype, progress=progress)
        bar.close()
        encoder.save(self.out / "speaker_encoder")
        return {"clips": len(clips), "speakers": len({c[2] for c in clips})}

    def step_cmvn(self) -> dict:
        """Mean and std of the SenseVoice front-end features of user speech (the nano
        model's own ``am.mvn``)."""
        from ..audio.fbank import SenseVoiceFrontEnd, write_cmvn
        from ..audio.io import load_audio

        users = sorted({s["audios"][0] for s in self.train_samples() if s["task"] in ("chat", "asr", "singing")})
        rng = random.Random(self.config.seed)
        front_end = SenseVoiceFrontEnd()
        feats = np.concatenate([front_end(load_audio(self.corpus / rel, 16000)[0], 16000)
                                for rel in rng.sample(users, min(len(users), self.config.cmvn_files))])
        write_cmvn(self.out / "am.mvn", feats.mean(0), feats.std(0) + 1e-5)
        return {"files": min(len(users), self.config.cmvn_files), "frames": len(feats)}

    def step_prepare(self) -> dict:
        from ..data.prepare import prepare

        report = prepare({"inputs": [str(self.corpus / "train.jsonl")], "output": str(self.out / "prepared"),
                          "codec": str(self.out / "codec"), "speaker_encoder": str(self.out / "speaker_encoder"),
                          "cmvn": str(self.out / "am.mvn"), "workers": 2, "speaker_dtype": self.config.speaker_dtype})
        if report.skipped:
            raise SpeedrunError(f"prepare skipped {report.skipped} sample(s): {report.problems()[:5]}")
        voices = self._one_vector_per_voice()
        return {"samples": report.samples, "voices": voices}

    def _one_vector_per_voice(self) -> int:
        """Give every sample spoken by a named voice (``meta.voice``) that voice's vector:
        the mean of the CAM++ vectors prepare computed for the voice's samples, written to
        ``prepared/voices/<name>.npy``, as the reference trains from a speaker table
        (``spk2emb[sample.speaker]``).

        Prepare's default, the CAM++ vector of the sample's own reply, carries what the
        reply says: a small model learns to read its answer from it (its first answer token
        followed the vector, not the question) and then, given the voice's vector at inference,
        answers questions it did not listen to (measured: 2 of 24 train questions right)."""
        from .corpus import read_jsonl, write_jsonl

        prepared = self.out / "prepared"
        path = prepared / "train.prepared.jsonl"
        samples = read_jsonl(path)
        by_voice: dict[str, list] = {}
        for s in samples:
            voice = (s.get("meta") or {}).get("voice")
            if voice and s.get("voice"):
                by_voice.setdefault(voice, []).append(np.load(prepared / s["voice"]))
        (prepared / "voices").mkdir(exist_ok=True)
        for voice, vectors in by_voice.items():
            np.save(prepared / "voices" / f"{voice}.npy", np.mean(vectors, axis=0).astype(np.float32))
        for s in samples:
            voice = (s.get("meta") or {}).get("voice")
            if voice in by_voice:
                s["voice"] = f"voices/{voice}.npy"
        write_jsonl(path, samples)
        return len(by_voice)

    def prepared_samples(self) -> list[dict]:
        from ..data.dataset import read_prepared

        return read_prepared(self.out / "prepared" / "train.prepared.jsonl")

    def step_timbre(self) -> dict:
        """Text-to-timbre on (role-play description, that character's voice vector) pairs:
        the vector is the mean of the voice vectors prepare computed for the character's
        train lines (what the SLM was conditioned on)."""
        from ..voice.timbre import TimbreConfig, train_timbre

        descriptions: dict[str, set] = {}
        for s in self.prepared_samples():
            if s["task"] == "roleplay" and s.get("voice"):
                descriptions.setdefault(s["meta"]["voice"], set()).add(s["meta"]["description"])
        vectors = self.voice_vectors()  # role-play voices speak only role-play lines
        pairs = [(d, vectors[v]) for v in sorted(descriptions) for d in sorted(descriptions[v])]
        bar = _bar(self.config.timbre_steps, "text-to-timbre", self.progress)

        def progress(step, loss):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        model = train_timbre(pairs, TimbreConfig(**self.config.timbre_config), steps=self.config.timbre_steps,
                             seed=self.config.seed, progress=progress)
        bar.close()
        model.save(self.out / "timbre")
        return {"pairs": len(pairs), "voices": len(descriptions)}

    # -- the spoken language model ------------------------------------------------------
    def step_init(self) -> dict:
        from ..layout import load_tokenizer
        from ..model.presets import NANO_SIMPLE_ENCODER, ctc_classes, new_checkpoint

        if self.config.encoder_ctc_compress and not self.config.encoder_emits_ctc:
            raise SpeedrunError("encoder_ctc_compress needs encoder_emits_ctc (it compresses CTC logits)")
        if self.config.encoder_type not in ("sensevoice", "simple"):
            raise SpeedrunError(f"encoder_type must be 'sensevoice' or 'simple', got {self.config.encoder_type!r}")
        if self.config.encoder_emits_ctc and self.config.encoder_type != "simple":
            raise SpeedrunError("encoder_emits_ctc makes a simple encoder's output layer its CTC classifier: set "
                                "encoder_type 'simple' (SenseVoice has its own CTC head, and the LM reads the frames "
                                "before it)")
        if self.config.encoder_ctc_embedding and self.config.encoder_type != "sensevoice":
            raise SpeedrunError("encoder_ctc_embedding reads the posteriors of SenseVoice's CTC head: set "
                                "encoder_type 'sensevoice'")
        tokenizer = load_tokenizer(self.out / "tokenizer.json")
        new_checkpoint(self.out / "init", preset="nano", seed=self.config.seed, tokenizer=tokenizer,
                       audio_encoder=NANO_SIMPLE_ENCODER if self.config.encoder_type == "simple" else None,
                       audio_output_size=ctc_classes(tokenizer) if self.config.encoder_emits_ctc else None)
        config_path = self.out / "init" / "config.json"
        config = json.loads(config_path.read_text())
        config["cmvn"] = str((self.out / "am.mvn").resolve())
        if self.config.encoder_ctc_compress:
            config["audio_ctc_compress"] = True
        if self.config.encoder_ctc_embedding:
            config["audio_ctc_embedding"] = True
        if self.config.voice_at_audio_steps:
            config["speaker_at_audio_steps"] = True
        config_path.write_text(json.dumps(config, indent=2))
        return {}

    def step_encoder(self) -> dict:
        """CTC pre-training of the audio encoder (``qinyu.train.encoder_ctc``) on the user
        speech of the ASR pairs and on user utterances re-spoken by other espeak-ng voices
        (:func:`extra_voices`), so that the encoder hears many more vocal tracts than the 20
        train user voices. SenseVoice, which the official model starts from, learned from tens
        of thousands of hours for the same reason. (The assistant's and characters' replies are
        left out: 871 clips of nine voices. Greedy CTC on held-out voices: 51 % CER after 800
        steps with them; 35 % after 1,200 steps without them and with 2,000 more re-spoken
        utterances.)

        The re-spoken utterances are also written as SLM samples: ``encoder_extra_utterances``
        ASR transcripts (``extra_asr``) and ``encoder_extra_requests`` spoken questions and
        singing requests of single-turn samples, then ``encoder_extra_song_requests`` singing
        requests alone, each with its sample's own answer (``extra_chat``, ``extra_singing``):
        answering what a new voice asks."""
        from ..audio.fbank import SenseVoiceFrontEnd
        from ..train.encoder_ctc import pretrain_audio_encoder
        from ..voice.campplus import SpeakerEncoder
        from .corpus import write_jsonl

        prepared = self.out / "prepared"
        front_end = SenseVoiceFrontEnd.from_mvn(self.out / "am.mvn")
        samples = self.prepared_samples()
        pairs, seen = [], set()
        for s in samples:
            if s["task"] == "asr" and s["audio"][0]["features"] not in seen:
                seen.add(s["audio"][0]["features"])
                pairs.append((np.load(prepared / s["audio"][0]["features"]), s["messages"][-1]["content"]))
        user_texts = sorted({text for _, text in pairs})
        counts = {"asr": len(pairs)}
        extra_dir = prepared / "cache" / "extra"
        extra_dir.mkdir(parents=True, exist_ok=True)
        rng = random.Random(self.config.seed)

        def spoken_asr(texts: list[str], seed: int, file_prefix: str, stem: str) -> list[dict]:
            """Speak ``texts`` in new voices: CTC pairs, features in cache/extra/, and ASR
            samples for the SLM stages (``<stem>.prepared.jsonl``)."""
            rows = []
            for k, (wav, text) in enumerate(extra_voices(texts, seed, self.progress) if texts else []):
                feats = front_end(wav, 16000)
                pairs.append((feats, text))
                features = f"cache/extra/{file_prefix}{k:05d}.npy"
                np.save(prepared / features, feats)
                rows.append(asr_sample(f"{stem.replace('_', '-')}-{k:05d}", text, features, len(feats)))
            write_jsonl(prepared / f"{stem}.prepared.jsonl", rows)
            return rows

        # ASR transcripts in new voices
        texts = [rng.choice(user_texts) for _ in range(self.config.encoder_extra_utterances)]
        counts["extra"] = len(spoken_asr(texts, self.config.seed, "", "extra_asr"))
        # random word sequences: nothing to guess from a sentence frame, every word must be heard
        salad = word_salad(user_texts, self.config.encoder_salad_utterances, self.config.seed + 2,
                           general=general_words(self.config.encoder_salad_general_words),
                           general_share=self.config.encoder_salad_general_share)
        counts["salad"] = len(spoken_asr(salad, self.config.seed + 2, "salad-", "salad_asr"))
        # one or two number words alone: the LM learns which number it hears before it has to find
        # the number inside a sentence
        numbers = number_sequences(self.config.encoder_number_utterances, self.config.seed + 3)
        counts["numbers"] = len(spoken_asr(numbers, self.config.seed + 3, "numbers-", "numbers_asr"))
        # train utterances spliced: sentence-like, but no sentence the LM could have memorised
        spliced = spliced_sentences(user_texts, self.config.encoder_spliced_utterances, self.config.seed + 8)
        counts["spliced"] = len(spoken_asr(spliced, self.config.seed + 8, "spliced-", "spliced_asr"))

        # spoken requests (one user utterance, then the answer) in new voices, with their answers
        single = [s for s in samples if s["task"] in ("chat", "singing")
                  and [a["role"] for a in s["audio"]] == ["user", "assistant"]]
        if self.config.encoder_extra_requests and not single:
            raise SpeedrunError("no single-turn spoken request (chat or singing) to re-speak")
        chosen = [rng.choice(single) for _ in range(self.config.encoder_extra_requests)]
        songs = [s for s in single if s["task"] == "singing"]
        if self.config.encoder_extra_song_requests and not songs:
            raise SpeedrunError("no single-turn song request to re-speak (encoder_extra_song_requests)")
        chosen += [rng.choice(songs) for _ in range(self.config.encoder_extra_song_requests)]
        speaker = SpeakerEncoder.load(self.out / "speaker_encoder")
        by_task: dict[str, list] = {"chat": [], "singing": []}
        texts = [s["meta"]["transcripts"][0] for s in chosen]
        vocabulary = filler_words(user_texts, {w for s in samples if s["task"] == "chat" for w in answer_words(s)})
        reframe_rng, rephrase_rng = random.Random(self.config.seed + 4), random.Random(self.config.seed + 6)
        for k, sample in enumerate(chosen):
            if rephrase_rng.random() < self.config.encoder_rephrase_share:
                texts[k] = (rephrase(sample, rephrase_rng) or texts[k:k + 1])[0]  # single-turn: one question
            if sample["task"] == "chat" and reframe_rng.random() < self.config.encoder_reframe_share:
                texts[k] = reframe(texts[k], answer_words(sample), vocabulary, reframe_rng)
        counts["reframed_or_rephrased"] = sum(t != s["meta"]["transcripts"][0] for t, s in zip(texts, chosen))
        for k, (sample, (wav, text)) in enumerate(zip(chosen, extra_voices(texts, self.config.seed + 1,
                                                                           self.progress))):
            feats = front_end(wav, 16000)
            pairs.append((feats, text))
            np.save(extra_dir / f"request-{k:05d}.npy", feats)
            vector = speaker.embed(wav, 16000, dtype=self.config.speaker_dtype)
            np.save(extra_dir / f"request-{k:05d}-speaker.npy", vector.astype(np.float32))
            user = {"role": "user", "source": None, "features": f"cache/extra/request-{k:05d}.npy",
                    "frames": len(feats), "speaker": f"cache/extra/request-{k:05d}-speaker.npy"}
            meta = {**sample.get("meta", {}), "transcripts": [text, *sample["meta"]["transcripts"][1:]]}
            by_task[sample["task"]].append({**{key: v for key, v in sample.items() if key != "_base"},
                                            "id": f"{sample['id']}-extra-{k:05d}",
                                            "audio": [user, sample["audio"][1]], "meta": meta})
        for task, rows in by_task.items():
            counts[f"extra_{task}"] = len(rows)
            write_jsonl(prepared / f"extra_{task}.prepared.jsonl", rows)
        bar = _bar(self.config.encoder_steps, "audio encoder (CTC)", self.progress)

        def progress(step, steps, loss, cer):
            bar.update(1)
            bar.set_postfix(ctc=f"{loss:.3f}")

        result = pretrain_audio_encoder(self.out / "init", pairs, out=self.out / "encoder",
                                        steps=self.config.encoder_steps, seed=self.config.seed,
                                        dtype=self.config.encoder_dtype, length_pool=self.config.encoder_length_pool,
                                        progress=progress)
        bar.close()
        return {**result, "utterances_by_source": counts}

    def recipe(self, stage: int):
        from ..train.recipe import Recipe

        names = {0: "align", 1: "pretrain", 2: "sft"}
        init = self.out / "encoder" if stage == 0 else self.out / f"stage{stage - 1}" / "final"
        data = [{"path": str(self.out / "prepared" / f"{stem}.prepared.jsonl"), "weight": w}
                for stem, w in self.config.stage_data[stage].items()]
        return Recipe(name=f"nano-stage{stage}-{names[stage]}", stage=names[stage], out=str(self.out / f"stage{stage}"),
                      data=data, init=str(init), max_length=self.config.max_length, seed=44 + stage,
                      **getattr(self.config, f"stage{stage}"))

    def _split_by_task(self) -> None:
        """``prepared/<task>.prepared.jsonl`` for every task of the train split, and the data
        derived from it (``chat_text``, ``singing_text``, ``arith_text``, ``voice_tts``)."""
        from .corpus import read_jsonl, write_jsonl

        prepared = self.out / "prepared"
        by_task: dict[str, list[dict]] = {}
        for sample in read_jsonl(prepared / "train.prepared.jsonl"):
            by_task.setdefault(sample["task"], []).append(sample)
        for task, samples in by_task.items():
            write_jsonl(prepared / f"{task}.prepared.jsonl", samples)
        write_jsonl(prepared / "chat_text.prepared.jsonl", [typed_questions(s) for s in by_task.get("chat", [])])
        write_jsonl(prepared / "singing_text.prepared.jsonl",
                    [typed_questions(s) for s in by_task.get("singing", [])])
        write_jsonl(prepared / "arith_text.prepared.jsonl", text_arithmetic(self.config.corpus_counting))
        write_jsonl(prepared / "reframed_text.prepared.jsonl",
                    reframed_questions(by_task.get("chat", []), self.config.seed + 5))
        write_jsonl(prepared / "rephrased_text.prepared.jsonl",
                    rephrased_questions(by_task.get("chat", []) + by_task.get("singing", []), seed=self.config.seed + 7))
        write_jsonl(prepared / "voice_tts.prepared.jsonl", [line_as_tts(s) for s in by_task.get("roleplay", [])])
        for stage, stems in self.config.stage_data.items():
            missing = [s for s in stems if not (prepared / f"{s}.prepared.jsonl").is_file()]
            if missing:
                raise SpeedrunError(f"stage {stage} names data {missing}, which the prepared data does not have "
                                    f"(tasks: {sorted(by_task)}, plus train, extra_asr, salad_asr, numbers_asr, spliced_asr, "
                                    f"extra_chat, extra_singing, chat_text, singing_text, reframed_text, rephrased_text, "
                                    f"arith_text and voice_tts)")

    def _stage(self, stage: int) -> dict:
        from ..train.trainer import RenderedFiles, train

        if self.rendered is None:
            self.rendered = RenderedFiles()
        if stage == 0:
            self._split_by_task()
        last = train(self.recipe(stage), resume=True, progress=self.progress, rendered=self.rendered)
        if stage == 2:
            self.rendered = None  # the last stage: free its data before assemble and evaluate
        return {"trained_steps": last.get("step"),
                **{k: last.get(k) for k in ("loss", "text_loss", "audio_loss", "tokens_per_s")}}

    def step_stage0(self) -> dict:
        return self._stage(0)

    def step_stage1(self) -> dict:
        return self._stage(1)

    def step_stage2(self) -> dict:
        return self._stage(2)

    # -- shipping -----------------------------------------------------------------------
    def step_assemble(self) -> dict:
        """One self-contained folder: the SLM (weights in ``ship_dtype``), its tokenizer,
        codec, speaker encoder, text-to-timbre and CMVN, and every stage's metrics."""
        import torch

        from ..layout import load_tokenizer
        from ..layout.chat import VOICE_LINE
        from ..model import QinYuForConditionalGeneration

        ck = self.checkpoint
        tmp = ck.with_name(ck.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model = QinYuForConditionalGeneration.from_pretrained(self.out / "stage2" / "final", dtype=torch.float32)
        if self.config.ship_dtype == "bf16":
            model = model.to(torch.bfloat16)
        config = model.config
        config.codec = {"type": "nano", "path": "codec"}
        config.speaker_encoder = "speaker_encoder"
        config.speaker_dtype = self.config.speaker_dtype  # how prepare embedded the user voices
        config.cmvn = "am.mvn"
        config.system_prompt = VOICE_LINE  # what the QA samples were trained with (docs/nano.md)
        config.default_voice = "voices/assistant-en.npy"
        config.trained = True
        config.description = ("qinyu-nano: trained from scratch by `make speedrun` on the synthetic nano corpus "
                              "(espeak-ng speech); closed domain: arithmetic on 0..10, a small fact table, greetings, "
                              "8 role-play voices, 6 songs")
        model.save_pretrained(tmp, tokenizer=load_tokenizer(self.out / "stage2" / "final"))
        for name in ("codec", "speaker_encoder", "timbre"):
            shutil.copytree(self.out / name, tmp / name)
        voices = self.voice_vectors()
        (tmp / "voices").mkdir()
        for name, vector in voices.items():
            np.save(tmp / "voices" / f"{name}.npy", vector)
        shutil.copy(self.out / "am.mvn", tmp / "am.mvn")
        write_examples(tmp / "examples")
        training = tmp / "training"
        training.mkdir()
        shutil.copy(self.out / "encoder" / "encoder_ctc_metrics.csv", training / "encoder_ctc_metrics.csv")
        for stage in range(3):
            (training / f"stage{stage}").mkdir()
            shutil.copy(self.out / f"stage{stage}" / "metrics.csv", training / f"stage{stage}" / "metrics.csv")
        (training / "speedrun.json").write_text(json.dumps(
            {"config": asdict(self.config), "steps": {s: self.done(s) for s in STEPS if self.done(s)}}, indent=1,
            default=str))
        shutil.rmtree(ck, ignore_errors=True)
        tmp.rename(ck)
        size = sum(p.stat().st_size for p in ck.rglob("*") if p.is_file())
        return {"checkpoint": str(ck), "megabytes": round(size / 1e6, 2)}

    def voice_vectors(self) -> dict[str, np.ndarray]:
        """Each assistant-side voice (``meta.voice``): its vector, ``prepared/voices/<name>.npy``
        (the mean of the vectors prepare computed for its samples; see ``_one_vector_per_voice``)."""
        folder = self.out / "prepared" / "voices"
        vectors = {p.stem: np.load(p).astype(np.float32) for p in sorted(folder.glob("*.npy"))}
        if "assistant-en" not in vectors:
            raise SpeedrunError(f"no vector for the assistant voice 'assistant-en' in {folder} (run the prepare step)")
        return vectors

    def step_evaluate(self) -> dict:
        from .evaluate import evaluate_nano

        report = evaluate_nano(self.checkpoint, self.corpus, self.checkpoint / "report.md",
                               limit=self.config.eval_limit, progress=self.progress)
        return {"report": str(self.checkpoint / "report.md"), "seconds": report.get("seconds")}


# Spoken questions bundled with the checkpoint (``make demo`` answers them), spoken by a held-out
# user voice the model never heard.
EXAMPLES = {"what-is-two-plus-five": "What is two plus five?", "cat-noise": "Which noise does a cat make?",
            "sing-twinkle": "Please sing Twinkle Twinkle Little Star."}
EXAMPLE_VOICE = "user-en-05"


def write_examples(folder: Path) -> None:
    from ..audio.io import save_audio
    from ..data.synth.tts import EspeakTTS
    from ..data.synth.voices import USER_VOICES

    voice = next(v for v in USER_VOICES["en"] if v.name == EXAMPLE_VOICE)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in EXAMPLES.items():
        wav, sr = EspeakTTS().synthesize(text, voice)
        save_audio(folder / f"{name}.wav", wav, sr)
        (folder / f"{name}.txt").write_text(text + "\n")


# Variants that are not voices to learn from (no pitch, or not speech-like).
NOT_SPEECH_LIKE = ("whisper", "robot", "robosoft", "demonic", "half-life", "universalrobot")


def espeak_variants() -> list[str]:
    """The variant ids espeak-ng lists (``espeak-ng --voices=variant``: ``!v/<id>``)."""
    import subprocess

    lines = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                           check=True).stdout.splitlines()[1:]
    return sorted({line.split()[4].split("/")[-1] for line in lines if len(line.split()) >= 5})


def extra_voices(texts: list[str], seed: int = 0, progress: bool = True, ahead: int = 8):
    """Yield (16 kHz waveform, text) for each of ``texts``, spoken by a random espeak-ng voice
    (accent, variant, pitch, speed). The held-out user voices' variants, and any variant
    whose name starts like one of them (steph2 for steph), are never used, so the held-out
    voices stay unheard."""
    from tqdm import tqdm

    from ..audio.espeak import EspeakWorker
    from ..audio.io import resample
    from ..data.synth.voices import EN_ACCENTS, USER_VOICES
    from .corpus import HELDOUT_USER_VOICES

    held = {v.variant.lower() for v in USER_VOICES["en"] if v.name in HELDOUT_USER_VOICES}
    variants = [v for v in espeak_variants() if not any(v.lower().startswith(h) for h in held)
                and not any(bad in v.lower() for bad in NOT_SPEECH_LIKE)]
    if not variants:
        raise SpeedrunError("espeak-ng lists no usable voice variants")
    rng = random.Random(seed)
    voices = [(f"{rng.choice(EN_ACCENTS)}+{rng.choice(variants)}", rng.randint(20, 80), rng.randint(120, 200))
              for _ in texts]

    # espeak-ng speaks in a process of its own (a fresh engine: the same texts, the same audio)
    # while the caller computes features (and speaker vectors) of the utterances before: a few
    # utterances ahead at most, so a slow caller does not pile up waveforms
    with EspeakWorker() as worker:
        sent = 0
        for k in tqdm(range(len(texts)), desc="extra voices", unit="utt", disable=not progress):
            while sent < len(texts) and sent - k < ahead:
                voice, pitch, speed = voices[sent]
                worker.submit(texts[sent], voice=voice, pitch=pitch, speed=speed)
                sent += 1
            wav, sr = worker.result()
            yield resample(wav, sr, 16000), texts[k]


def asr_sample(sample_id: str, text: str, features: str, frames: int) -> dict:
    """A prepared ASR sample whose user speech is a features file (no source audio, no
    speaker vector): the ASR prompt, then the transcript."""
    from ..layout import ASR_PROMPT

    return {"id": sample_id, "task": "asr",
            "messages": [{"role": "user", "content": ASR_PROMPT}, {"role": "assistant", "content": text}],
            "audio": [{"role": "user", "source": None, "features": features, "frames": frames, "speaker": None}],
            "voice": None}


def word_salad(texts: list[str], count: int, seed: int = 0, numbers: int = 20, general: list[str] = (),
               general_share: float = 0.5) -> list[str]:
    """``count`` random sequences of 3 to 8 words: half of the words number words (zero to
    ``numbers``), the others drawn from the words of ``texts`` or, at rate ``general_share``,
    from ``general`` (``general_words``). The corpus's utterances are a few sentence frames
    with numbers and names in them, so a recogniser (the CTC encoder, or the LM reading it) can
    guess most of a transcript from the frame; in a random sequence every word has to be heard.
    None says a word trigram of a held-out phrasing that no train phrasing has
    (``says_heldout_trigram``): the general words include the held-out phrasings' words, never
    in their order."""
    from .rephrase import says_heldout_trigram

    vocabulary, random_word = _random_words(texts, numbers, general, general_share)
    if count and not vocabulary:
        raise SpeedrunError("no words to draw random word sequences from")
    rng = random.Random(seed)
    out = []
    for _ in range(20 * count):
        if len(out) == count:
            break
        line = " ".join(random_word(rng) for _ in range(rng.randint(3, 8)))
        if not says_heldout_trigram(line):
            out.append(line)
    if len(out) < count:
        raise SpeedrunError(f"only {len(out)} of {count} random word sequences avoid the held-out phrasings")
    return out


def general_words(count: int) -> list[str]:
    """The ``count`` most frequent English words that are plain words (letters, at most one
    apostrophe: "the", "don't"; not "°" or "2"), most frequent first, from the wordfreq
    package's English list (wordfreq ships its data: nothing is downloaded)."""
    if count <= 0:
        return []
    try:
        from wordfreq import top_n_list
    except ImportError as e:
        raise SpeedrunError("general English words need the wordfreq package: pip install 'qinyu[words]' "
                            "(or set encoder_salad_general_words to 0)") from e

    words = [w for w in top_n_list("en", 2 * count) if re.fullmatch(r"[a-z]+(?:'[a-z]+)?", w)]
    if len(words) < count:
        raise SpeedrunError(f"wordfreq lists only {len(words)} plain English words among its top {2 * count}")
    return words[:count]


def _random_words(texts: list[str], numbers: int, general: list[str] = (), general_share: float = 0.0):
    """(the words of ``texts``, a function rng -> a random word): a number word (zero to
    ``numbers``) half the time, else a word of ``general`` at rate ``general_share`` (when
    given), else a word of ``texts``."""
    from ..data.synth.sources import number_words

    vocabulary = sorted({w for t in texts for w in re.findall(r"[a-z]+(?:'[a-z]+)?", t.lower())})
    digits = [number_words(n) for n in range(numbers + 1)]
    general = list(general)

    def random_word(rng: random.Random) -> str:
        if rng.random() < 0.5:
            return rng.choice(digits)
        if general and rng.random() < general_share:
            return rng.choice(general)
        return rng.choice(vocabulary)

    return vocabulary, random_word


def spliced_sentences(texts: list[str], count: int, seed: int = 0, substitute: float = 0.15,
                      numbers: int = 20) -> list[str]:
    """``count`` made-up utterances, each the start of one of ``texts`` and the end of another
    (cut at random word boundaries: "Can you tell me | the third line of Ode to Joy?"), with
    each word swapped for a random one (a word of ``texts`` or a number word) at rate
    ``substitute``. An LM trained on the corpus's few hundred user sentences transcribed
    unheard ones as the nearest sentence it knew ("let's hear London Bridge, can you sing it"
    -> "what's the best part of your life"); in these, no sentence is known past its first few
    words, so the rest has to be read. None says a word trigram of a held-out phrasing that
    no train phrasing has (``says_heldout_trigram``)."""
    from .rephrase import says_heldout_trigram

    sentences = [t.split() for t in texts if len(t.split()) >= 2]
    if count and not sentences:
        raise SpeedrunError("no sentences of two words or more to splice")
    _, random_word = _random_words(texts, numbers)
    rng = random.Random(seed)
    out = []
    for _ in range(20 * count):
        if len(out) == count:
            break
        a, b = rng.choice(sentences), rng.choice(sentences)
        words = a[:rng.randint(1, len(a) - 1)] + b[rng.randint(1, len(b) - 1):]
        words = [random_word(rng) if rng.random() < substitute else w for w in words]
        text = " ".join(words)
        text = text[0].upper() + text[1:]
        if not says_heldout_trigram(text):
            out.append(text)
    if len(out) < count:
        raise SpeedrunError(f"only {len(out)} of {count} spliced sentences avoid the held-out phrasings")
    return out


def number_sequences(count: int, seed: int = 0, max_words: int = 2, numbers: int = 20) -> list[str]:
    """``count`` sequences of 1 to ``max_words`` number words (zero to ``numbers``) at random.
    Said alone, a number has no sentence frame to hide in: an LM that transcribes these has
    to read the number off the frames (docs/nano.md: with them, held-out ASR utterances got
    every number right in 19 of 51 instead of 6)."""
    from ..data.synth.sources import number_words

    words = [number_words(n) for n in range(numbers + 1)]
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, max_words))) for _ in range(count)]


# words that say which operation a question asks for: never dropped when a question is reframed
OPERATION_WORDS = frozenset({"plus", "minus", "add", "take", "away", "more", "from", "subtract", "sum", "together",
                             "left"})


def _word(token: str) -> str:
    return re.sub(r"[^a-z']", "", token.lower())


@functools.cache
def _number_words(top: int = 20) -> frozenset[str]:
    """The words that say 0..``top`` ("twenty", "one", ...); ``reframe`` asks on every question."""
    from ..data.synth.sources import number_words

    return frozenset(w for n in range(top + 1) for w in number_words(n).replace("-", " ").split())


def answer_words(sample: dict) -> set[str]:
    """The words of a sample's answers (what each question asked about is among them: "cat"
    in "A cat says meow.", "Germany" in "The capital of Germany is Berlin.")."""
    return {_word(t) for m in sample["messages"] if m["role"] == "assistant"
            for t in m["content"].replace("<|audio|>", " ").split()} - {""}


def filler_words(texts: list[str], answers: set[str]) -> list[str]:
    """Words of ``texts`` that can be put into a question without changing what it asks: no
    number words, no operation words, none of ``answers`` (the words of every answer: things,
    cities, colours) and no word of a train greeting ("thanks" would make another question)."""
    from .corpus import GREETINGS

    greetings = {_word(t) for train, *_ in GREETINGS.values() for text in train for t in text.split()}
    words = {_word(t) for text in texts for t in text.split()} - {""}
    return sorted(words - _number_words() - OPERATION_WORDS - answers - greetings)


def reframe(text: str, keep: set[str], vocabulary: list[str], rng: random.Random, drop: float = 0.3,
            insert: int = 2) -> str:
    """``text`` in a shaken sentence frame: each word that is not a number word, an operation
    word or in ``keep`` is dropped with probability ``drop``, then 0 to ``insert`` words of
    ``vocabulary`` are put in at random places. The corpus asks each thing in a few fixed
    phrasings; trained on those alone, the nano LM answered held-out phrasings of train facts
    from the frame ("Tell me the colour of the sky." -> "Two plus eight is ten.", typed)."""
    protected = keep | OPERATION_WORDS | _number_words()
    tokens = [t for t in text.split() if _word(t) in protected or rng.random() >= drop] or text.split()
    for _ in range(rng.randint(0, insert) if vocabulary else 0):
        tokens.insert(rng.randint(0, len(tokens)), rng.choice(vocabulary))
    out = " ".join(tokens)
    return out[:1].upper() + out[1:]


def reframed_questions(chat: list[dict], seed: int = 0, fact_copies: int = 4) -> list[dict]:
    """Typed QA (``typed_questions``) whose user turns are reframed (``reframe``), each with its
    sample's spoken answer: ``fact_copies`` copies of each fact, follow-up fact and greeting
    sample (66 + 30 + 40 in the corpus, against 384 arithmetic ones, which ``arith_text``
    already multiplies), one of each arithmetic sample."""
    rng = random.Random(seed)
    vocabulary = filler_words([t for s in chat for t in (s.get("meta") or {}).get("transcripts", [])],
                              {w for s in chat for w in answer_words(s)})
    rows = []
    for sample in chat:
        sub = ((sample.get("meta") or {}).get("nano") or {}).get("sub", "")
        copies = fact_copies if sub in ("fact", "follow-fact", "greeting") else 1
        keep = answer_words(sample)
        for c in range(copies):
            meta = dict(sample["meta"])
            meta["transcripts"] = [reframe(t, keep, vocabulary, rng) if a["role"] == "user" else t
                                   for t, a in zip(meta["transcripts"], sample["audio"])]
            typed = typed_questions({**sample, "meta": meta})
            rows.append({**typed, "id": f"{sample['id']}-reframed-{c}"})
    return rows


def rephrased_questions(samples: list[dict], copies: int = 2, seed: int = 0) -> list[dict]:
    """Each spoken QA and singing sample ``copies`` times with its questions typed in other
    train phrasings (``rephrase``), each with the sample's own answers."""
    rng = random.Random(seed)
    rows = []
    for sample in samples:
        for c in range(copies):
            questions = rephrase(sample, rng)
            if questions is None:
                break
            transcripts = list(sample["meta"]["transcripts"])
            users = [k for k, a in enumerate(sample["audio"]) if a["role"] == "user"]
            if len(users) != len(questions):
                raise SpeedrunError(f"sample {sample['id']}: {len(questions)} rephrased questions for "
                                    f"{len(users)} user turns")
            for k, question in zip(users, questions):
                transcripts[k] = question
            typed = typed_questions({**sample, "meta": {**sample["meta"], "transcripts": transcripts}})
            rows.append({**typed, "id": f"{sample['id']}-rephrased-{c}"})
    return rows


def typed_questions(sample: dict) -> dict:
    """A prepared spoken-QA sample with every user utterance replaced by its transcript
    (``meta.transcripts`` lists the texts of the sample's audios in order): the same
    conversation typed, the same spoken answer. Answering is then also learned from text."""
    transcripts = (sample.get("meta") or {}).get("transcripts") or []
    if len(transcripts) != len(sample["audio"]):
        raise SpeedrunError(f"sample {sample.get('id')}: {len(transcripts)} transcripts for "
                            f"{len(sample['audio'])} audios")
    audio, messages, k = [], [], 0
    for m in sample["messages"]:
        parts = m["content"].split("<|audio|>")
        content = parts[0]
        for part in parts[1:]:
            entry = sample["audio"][k]
            if entry["role"] == "user":
                content += transcripts[k] + part
            else:
                content += "<|audio|>" + part
                audio.append(entry)
            k += 1
        messages.append({"role": m["role"], "content": content})
    return {**sample, "id": f"{sample['id']}-typed", "messages": messages, "audio": audio}


def fit_selection(files: list[Path], seconds: float | None, seed: int = 0) -> list[Path]:
    """A seeded draw of whole files, in their given order, adding up to at most ``seconds``
    of audio (all of them when ``seconds`` is None or they are no longer)."""
    import soundfile as sf

    if seconds is None:
        return list(files)
    if not seconds > 0:
        raise SpeedrunError(f"codec_fit_seconds must be > 0 or None, got {seconds}")
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    chosen, total = set(), 0.0
    for i in order:
        duration = sf.info(str(files[i])).duration
        if total + duration <= seconds:
            chosen.add(i)
            total += duration
    if not chosen:
        raise SpeedrunError(f"codec_fit_seconds {seconds} is shorter than every assistant audio file")
    return [f for i, f in enumerate(files) if i in chosen]


def text_arithmetic(counting: bool = False) -> list[dict]:
    """Typed arithmetic answered in text only: every train operand pair (``heldout_pair``
    false) of addition and subtraction in every train question template, answered as the
    corpus answers ("Three plus two is five."; with ``counting`` "Three plus two: four, five.
    Five."). No system prompt, no audio: ~25 tokens a sample (~40 counting), so many fit in
    one pack, and the spoken answers, which say the same sentence, share what they teach."""
    from .corpus import MAX_OPERAND, QUESTIONS, heldout_pair
    from .corpus import arithmetic_sentences

    rows = []
    for op, group in (("+", "add"), ("-", "sub")):
        for a in range(MAX_OPERAND + 1):
            for b in range(MAX_OPERAND + 1):
                if (op == "-" and b > a) or heldout_pair(a, op, b):
                    continue
                for k, template in enumerate(QUESTIONS[group][0]):
                    question, answer, _ = arithmetic_sentences(a, op, b, template, counting)
                    rows.append({"id": f"arith-text-{group}-{a}-{b}-t{k}", "task": "chat",
                                 "messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}],
                                 "audio": [], "voice": None})
    return rows


def line_as_tts(sample: dict) -> dict:
    """A prepared role-play sample's last line as a TTS sample in the character's voice: the
    line's text to read, its speech, the character's voice vector. Short (no script, no
    history), so the model sees how each voice vector sounds far more often than the long
    role-play samples alone would show it."""
    from ..layout import TTS_PROMPT

    last = sample["messages"][-1]
    if last["role"] != "assistant" or not last["content"].endswith("<|audio|>") or not sample["audio"] \
            or sample["audio"][-1]["role"] != "assistant":
        raise SpeedrunError(f"sample {sample.get('id')}: does not end with a spoken assistant line")
    text = last["content"][:-len("<|audio|>")].strip()
    return {"id": f"{sample['id']}-tts", "task": "tts",
            "messages": [{"role": "user", "content": TTS_PROMPT.format(text=text)},
                         {"role": "assistant", "content": text + "<|audio|>"}],
            "audio": [sample["audio"][-1]], "voice": sample["voice"], "meta": sample.get("meta", {})}


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="step")
