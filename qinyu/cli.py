"""The ``qinyu`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _count_parameters(directory: Path) -> tuple[int, dict[str, int]]:
    """Parameters per top-level group, read from safetensors headers (nothing loaded)."""
    from safetensors import safe_open

    from .model.checkpoint import weight_files

    files = weight_files(directory)
    groups: dict[str, int] = {}
    for f in files:
        with safe_open(str(f), "pt") as sf:
            for key in sf.keys():
                n = 1
                for d in sf.get_slice(key).get_shape():
                    n *= d
                parts = key.split(".")
                group = ".".join(parts[:2]) if parts[0] == "model" else parts[0]
                groups[group] = groups.get(group, 0) + n
    return sum(groups.values()), groups


def cmd_info(args) -> int:
    from .model.checkpoint import open_checkpoint

    directory = Path(args.checkpoint)
    folder = open_checkpoint(directory)
    config = folder.config
    total, groups = _count_parameters(directory)
    layout = config.layout
    bb = config.backbone
    info = {
        "checkpoint": str(directory),
        "status": "trained" if config.trained else "UNTRAINED (random initialisation)",
        "official": folder.official,
        "description": config.description,
        "backbone": {k: bb.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                             "num_key_value_heads", "intermediate_size", "max_position_embeddings",
                                             "tie_word_embeddings")},
        "parameters": total,
        "parameters_by_group": groups,
        "audio_encoder": config.audio_encoder,
        "speaker_embedding": config.speaker_embedding_size if config.use_speaker_embedding else None,
        "interleave_schedule": config.interleave_schedule,
        "vocabulary": {
            "tokenizer_entries": layout.num_tokens,
            "embedding_rows": layout.vocab_size,
            "text_and_special_ids": f"0..{layout.audio_base - 1}",
            "audio_ids": f"{layout.audio_base}..{layout.audio_end - 1} (8 codebooks x 1032, <|audio_0_0|> = "
                         f"{layout.audio_base})",
            "specials": {k: v for k, v in layout.to_dict().items() if k not in ("num_tokens", "vocab_size")},
        },
        "tokenizer": (directory / "tokenizer.json").is_file(),
    }
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"checkpoint   {directory}" + (f" (official {folder.official} folder, read through the key map; "
                                          f"`qinyu convert --official` writes it in the qinyu layout)"
                                          if folder.official else ""))
    print(f"status       {info['status']}" + (f" — {config.description}" if config.description else ""))
    print(f"backbone     {bb['model_type']}: {bb.get('num_hidden_layers')} layers, hidden {bb.get('hidden_size')}, "
          f"{bb.get('num_attention_heads')} heads / {bb.get('num_key_value_heads')} kv heads, "
          f"max {bb.get('max_position_embeddings')} positions, tied embeddings {bool(bb.get('tie_word_embeddings'))}")
    print(f"parameters   {total:,}")
    for g, n in sorted(groups.items(), key=lambda x: -x[1]):
        print(f"  {g:<28} {n:>14,}")
    enc = config.audio_encoder
    print(f"audio        encoder {enc['type'] if enc else 'none'}" + (f" {enc}" if enc else "") +
          f"; projector norm {config.audio_projection_norm_type}")
    print(f"speaker      {info['speaker_embedding']}-d vectors, projector norm {config.speaker_projection_norm_type}")
    print(f"interleave   {config.interleave_schedule}")
    v = info["vocabulary"]
    print(f"vocabulary   {v['tokenizer_entries']:,} tokens, {v['embedding_rows']:,} embedding rows; "
          f"text+specials {v['text_and_special_ids']}; audio {v['audio_ids']}")
    print("             " + ", ".join(f"{k}={i}" for k, i in v["specials"].items()))
    print(f"tokenizer    {'tokenizer.json present' if info['tokenizer'] else 'MISSING tokenizer.json'}")
    return 0


def cmd_new_checkpoint(args) -> int:
    from .model import new_checkpoint

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise SystemExit(f"error: {out} exists and is not empty (use --force to overwrite)")
    if args.with_codec:
        from .demo import speaking_checkpoint

        speaking_checkpoint(out, preset=args.preset, seed=args.seed)
    else:
        new_checkpoint(out, preset=args.preset, seed=args.seed)
    print(f"wrote an UNTRAINED {args.preset} checkpoint (random initialisation, seed {args.seed}"
          f"{', with a quickly fitted nano codec' if args.with_codec else ''}) to {out}")
    return 0


def cmd_convert(args) -> int:
    import torch

    from .model.checkpoint import convert_official

    dtype = None if args.dtype == "keep" else getattr(torch, args.dtype)
    out = convert_official(args.official, args.out, dtype=dtype, sensevoice=args.sensevoice, campplus=args.campplus,
                           xy=args.xy)
    print(f"wrote qinyu checkpoint {out}")
    return 0


def cmd_codec_fit(args) -> int:
    from .codec.fit import fit_nano_codec

    codec = fit_nano_codec(args.out, minutes=args.minutes, iterations=args.iterations, seed=args.seed,
                           frame_rate=args.frame_rate, audio_dir=args.audio_dir)
    source = f"the audio files in {args.audio_dir}" if args.audio_dir else "espeak-ng speech"
    print(f"fitted the nano codec on {codec.info['fitted_on_seconds']} s of {source} in "
          f"{codec.info['fit_seconds']} s; saved to {args.out}")
    return 0


def cmd_codec_encode(args) -> int:
    import numpy as np

    from .audio.io import load_audio
    from .codec import load_codec

    codec = load_codec(args.codec)
    wav, sr = load_audio(args.input)
    codes = codec.encode(wav, sr)
    np.save(args.out, codes)
    print(f"{args.input}: {len(wav) / sr:.2f} s -> codes {codes.shape} at {codec.frame_rate} Hz in {args.out}")
    return 0


def cmd_codec_decode(args) -> int:
    import numpy as np

    from .audio.io import load_audio, save_audio
    from .codec import load_codec, shift_pitch

    codec = load_codec(args.codec)
    if str(args.input).endswith(".npy"):
        try:
            codes = np.load(args.input)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot read codes from {args.input}: {e}")
    else:  # an audio file: resynthesise it through the codec
        codes = codec.encode(*load_audio(args.input))
    if args.semitones:
        if codec.codec_type != "nano":
            raise SystemExit("error: --semitones needs a codec with explicit pitch (nano)")
        codes = codes.copy()
        codes[0] = shift_pitch(codes[0], args.semitones, codec.config)
    wav = codec.decode(codes)
    save_audio(args.out, wav, codec.output_sample_rate)
    print(f"decoded {codes.shape[1]} frames -> {len(wav) / codec.output_sample_rate:.2f} s in {args.out}")
    return 0


def _library(args):
    from .voice.library import VoiceLibrary

    return VoiceLibrary(args.library)


def _load_vector(path):
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vector file not found: {path}")
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix in (".pt", ".pth"):
        import torch

        return torch.load(str(path), map_location="cpu", weights_only=True).float().numpy()
    raise SystemExit(f"error: {path}: a vector file must be .npy or .pt (a 192-d tensor, e.g. a reference "
                     f"*_speaker.pt)")


def cmd_voice_create(args) -> int:
    lib = _library(args)
    if args.vector:
        voice = lib.add(args.name, _load_vector(args.vector), "vector", str(args.vector), replace=args.replace)
    elif args.clip:
        from .voice.campplus import SpeakerEncoder

        if not args.speaker_encoder:
            raise SystemExit("error: --clip needs --speaker-encoder (a speaker encoder folder or the official "
                             "campplus_cn_common.bin)")
        enc_path = Path(args.speaker_encoder)
        encoder = SpeakerEncoder.from_official(enc_path) if enc_path.suffix == ".bin" else SpeakerEncoder.load(enc_path)
        voice = lib.create_from_clip(args.name, args.clip, encoder, replace=args.replace)
    else:
        from .voice.timbre import TextToTimbre

        if not args.timbre:
            raise SystemExit("error: --description needs --timbre, a text-to-timbre model folder (train one with "
                             "qinyu.voice.timbre.train_timbre; qinyu-nano ships one)")
        voice = lib.create_from_description(args.name, args.description, TextToTimbre.load(args.timbre),
                                            seed=args.seed, replace=args.replace)
    print(f"created voice {voice.name!r} ({voice.id}, from {voice.source}) in {lib.path}")
    return 0


def cmd_voice_list(args) -> int:
    lib = _library(args)
    voices = lib.list()
    if args.json:
        print(json.dumps([v.summary() for v in voices], indent=2, ensure_ascii=False))
        return 0
    print(f"{len(voices)} voice(s) in {lib.path}")
    for v in voices:
        detail = v.detail if len(v.detail) < 60 else v.detail[:57] + "..."
        print(f"  {v.id}  {v.name:<24} {v.source:<12} |v|={np.linalg.norm(v.vector):6.2f}  {detail}")
    return 0


def cmd_voice_delete(args) -> int:
    voice = _library(args).delete(args.name)
    print(f"deleted voice {voice.name!r} ({voice.id})")
    return 0


def cmd_voice_import(args) -> int:
    voices = _library(args).import_presets(args.file, replace=args.replace)
    print(f"imported {len(voices)} preset voice(s) from {args.file}")
    return 0


def cmd_data_check(args) -> int:
    from .data.schema import check_file

    status = 0
    for path in args.files:
        count, problems = check_file(path, check_files=not args.no_files)
        for p in problems:
            print(f"{path}: {p}")
        print(f"{path}: {count} sample(s), {len(problems)} problem(s)")
        status = status or (1 if problems else 0)
    return status


def cmd_data_prepare(args) -> int:
    from .data.prepare import main_prepare

    return main_prepare(args.config)


def cmd_data_toy(args) -> int:
    from .data.toy import write_toy_corpus

    path = write_toy_corpus(args.out, num_samples=args.samples, seed=args.seed)
    print(f"wrote a toy spoken-dialogue corpus: {path}")
    return 0


def cmd_train(args) -> int:
    from .train.recipe import Recipe
    from .train.trainer import train

    import os

    last = train(Recipe.load(args.recipe), resume=args.resume, progress=not args.quiet)
    if last and os.environ.get("RANK", "0") == "0":
        print(f"step {last['step']}: loss {last['loss']:.4f} (text {last['text_loss']:.4f}, "
              f"audio {last['audio_loss']:.4f})")
    return 0


def _session(args):
    from .engine import SamplingParams
    from .engine.session import load_session

    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_steps=args.max_steps,
                            seed=args.seed)
    return load_session(args.model, voice=getattr(args, "voice", None), role=getattr(args, "role", None),
                        library=getattr(args, "library", None), timbre=getattr(args, "timbre", None), params=params,
                        voice_clip=getattr(args, "voice_clip", None),
                        speaker_encoder=getattr(args, "speaker_encoder", None))


def _play(session, events, out_path=None, show=True):
    """Print text as it streams; collect audio; write it to ``out_path``."""
    from .audio.io import save_audio
    from .engine.session import AudioChunk, Done, TextDelta

    pcm, done = [], None
    for e in events:
        if isinstance(e, TextDelta) and show:
            print(e.text, end="", flush=True)
        elif isinstance(e, AudioChunk):
            pcm.append(e.pcm)
        elif isinstance(e, Done):
            done = e
    if show:
        print()
    if out_path:
        if session.codec is None:
            np.save(Path(out_path).with_suffix(".codes.npy"), done.codes)
            print(f"(this checkpoint names no codec: wrote the {done.codes.shape[1]} frames of codes to "
                  f"{Path(out_path).with_suffix('.codes.npy')})", file=sys.stderr)
        else:
            audio = np.concatenate(pcm) if pcm else np.zeros(0, np.float32)
            save_audio(out_path, audio, session.codec.output_sample_rate)
            print(f"wrote {len(audio) / session.codec.output_sample_rate:.2f} s of speech to {out_path}",
                  file=sys.stderr)
    return done


def cmd_chat(args) -> int:
    from .audio.io import load_audio

    session = _session(args)
    if args.audio or args.text:
        audio = load_audio(args.audio) if args.audio else None
        _play(session, session.respond(session.user_turn(text=args.text, audio=audio)), args.out)
        return 0
    print("interactive chat: type a message, or '/audio FILE' to speak a file; an empty line quits")
    turn_no = 0
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            break
        audio = load_audio(line.split(maxsplit=1)[1]) if line.startswith("/audio ") else None
        turn = session.user_turn(text=None if audio else line, audio=audio)
        turn_no += 1
        out = Path(args.out).with_name(f"{Path(args.out).stem}-{turn_no}{Path(args.out).suffix}") if args.out else None
        _play(session, session.respond(turn), out)
    return 0


def cmd_asr(args) -> int:
    from .audio.io import load_audio

    session = _session(args)
    print(session.asr(*load_audio(args.audio)))
    return 0


def cmd_tts(args) -> int:
    session = _session(args)
    _play(session, session.tts(args.text), args.out, show=False)
    return 0


def cmd_serve(args) -> int:
    from .server.app import run_server
    from .server.config import ServerConfig

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("library", args.library),
                                   ("timbre", args.timbre), ("max_steps", args.max_steps)) if v is not None}
    config = ServerConfig.load(args.config, **overrides) if args.config else ServerConfig.from_dict(overrides)
    run_server(args.model, config)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo, run_toy_demo

    if args.toy:
        run_toy_demo(args.out)
    else:
        run_demo(args.out, model_dir=args.model, serve=not args.no_serve, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .model.presets import PRESETS

    parser = argparse.ArgumentParser(prog="qinyu", description="qinyu: an open implementation of VITA-QinYu, "
                                     "an expressive spoken language model (conversation, role-play, singing).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="describe a checkpoint: config, parameter count, vocabulary")
    p.add_argument("checkpoint", help="checkpoint folder (config.json + model.safetensors + tokenizer.json)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("new-checkpoint", help="write a randomly initialised (untrained) checkpoint from a preset")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    p.add_argument("--with-codec", action="store_true", help="also fit a nano codec (seconds) so the model can speak: "
                   "for wiring the server, the web page and the harness before a trained model exists")
    p.set_defaults(func=cmd_new_checkpoint)

    p = sub.add_parser("convert", help="write an official VITA-QinYu folder (8B or 4B) as a qinyu checkpoint")
    p.add_argument("--official", required=True, metavar="DIR", help="official folder (config.json, safetensors, "
                   "tokenizer.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--dtype", choices=["keep", "float32", "bfloat16", "float16"], default="keep",
                   help="store weights in this dtype (default: as in the official folder)")
    p.add_argument("--sensevoice", metavar="DIR", help="SenseVoiceSmall folder: bring its am.mvn (speech CMVN)")
    p.add_argument("--campplus", metavar="FILE", help="campplus_cn_common.bin: the speaker encoder for user voices")
    p.add_argument("--xy", metavar="DIR", help="folder with xy_tokenizer.ckpt + xy_tokenizer_config.yaml (the codec)")
    p.set_defaults(func=cmd_convert)

    codec = sub.add_parser("codec", help="speech codec: fit the nano codec, encode, decode")
    csub = codec.add_subparsers(dest="codec_command", metavar="COMMAND", required=True)
    p = csub.add_parser("fit", help="fit the nano codec on a folder of audio, or on synthesised espeak-ng speech")
    p.add_argument("--audio-dir", help="fit on every wav/flac/ogg file under this folder (default: synthesise "
                   "--minutes of espeak-ng speech)")
    p.add_argument("--out", required=True, help="output codec folder")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of espeak-ng speech when no --audio-dir")
    p.add_argument("--iterations", type=int, default=20, help="k-means iterations per codebook")
    p.add_argument("--frame-rate", type=float, default=12.5, help="code frames per second")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_codec_fit)
    p = csub.add_parser("encode", help="audio file -> codes (.npy, shape (8, T))")
    p.add_argument("input", help="wav/flac/ogg file")
    p.add_argument("--codec", required=True, help="codec folder")
    p.add_argument("--out", required=True, help="output .npy")
    p.set_defaults(func=cmd_codec_encode)
    p = csub.add_parser("decode", help="codes (.npy) or an audio file (resynthesis) -> wav")
    p.add_argument("input", help=".npy codes or an audio file")
    p.add_argument("--codec", required=True, help="codec folder")
    p.add_argument("--out", required=True, help="output .wav")
    p.add_argument("--semitones", type=float, default=0.0, help="re-pitch by this many semitones (nano codec)")
    p.set_defaults(func=cmd_codec_decode)

    voice = sub.add_parser("voice", help="the voice library: create, list, delete voices")
    voice.add_argument("--library", help="library file (default: $QINYU_VOICE_LIBRARY or "
                       "~/.local/share/qinyu/voices.sqlite)")
    vsub = voice.add_subparsers(dest="voice_command", metavar="COMMAND", required=True)
    p = vsub.add_parser("create", help="create a voice from a description, a reference clip or a vector")
    p.add_argument("--name", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--description", help="a role description (needs --timbre)")
    src.add_argument("--clip", help="a reference recording (needs --speaker-encoder)")
    src.add_argument("--vector", help="a 192-d vector file (.npy or .pt)")
    p.add_argument("--timbre", help="text-to-timbre model folder")
    p.add_argument("--speaker-encoder", help="speaker encoder folder, or the official campplus_cn_common.bin")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for --description")
    p.add_argument("--replace", action="store_true", help="replace a voice of the same name")
    p.set_defaults(func=cmd_voice_create)
    p = vsub.add_parser("list", help="list the voices")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_voice_list)
    p = vsub.add_parser("delete", help="delete a voice by name or id")
    p.add_argument("name")
    p.set_defaults(func=cmd_voice_delete)
    p = vsub.add_parser("import-presets", help="import reference preset voices (spk2embeds .pt: name -> vector)")
    p.add_argument("file")
    p.add_argument("--replace", action="store_true")
    p.set_defaults(func=cmd_voice_import)

    data = sub.add_parser("data", help="training data: check, prepare, toy corpus")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    p = dsub.add_parser("check", help="validate JSONL training files; every bad line is reported")
    p.add_argument("files", nargs="+")
    p.add_argument("--no-files", action="store_true", help="do not open the audio files")
    p.set_defaults(func=cmd_data_check)
    p = dsub.add_parser("prepare", help="codec codes, speaker vectors and speech features, cached and resumable")
    p.add_argument("--config", required=True, help="prepare config (YAML)")
    p.set_defaults(func=cmd_data_prepare)
    p = dsub.add_parser("toy", help="synthesise a small spoken-dialogue corpus with espeak-ng (offline)")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_toy)

    from .data.synth.cli import add_synth_parser  # `qinyu data synth conversation|roleplay|singing`

    add_synth_parser(dsub)
    from .nano.cli import add_corpus_parser  # `qinyu data nano-corpus`

    add_corpus_parser(dsub)

    p = sub.add_parser("train", help="train with a recipe (torchrun for several processes)")
    p.add_argument("--recipe", required=True, help="recipe YAML")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    def add_generation_args(p):
        p.add_argument("--model", required=True, help="checkpoint folder")
        p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the reference's choice)")
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--max-steps", type=int, default=1024)
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("chat", help="talk to a model: one turn (--text/--audio) or interactive")
    add_generation_args(p)
    p.add_argument("--text", help="what the user says, as text")
    p.add_argument("--audio", help="what the user says, as a recording")
    p.add_argument("--voice", help="assistant voice: a voice-library name or id")
    p.add_argument("--role", help="role description (the persona; with --timbre also the voice)")
    p.add_argument("--timbre", help="text-to-timbre folder, to make the voice from --role")
    p.add_argument("--voice-clip", help="assistant voice from a reference recording (needs --speaker-encoder)")
    p.add_argument("--speaker-encoder", help="speaker encoder folder or campplus_cn_common.bin (user voices and "
                   "--voice-clip)")
    p.add_argument("--library", help="voice library file")
    p.add_argument("--out", help="write the spoken reply here (.wav)")
    p.set_defaults(func=cmd_chat)
    p = sub.add_parser("asr", help="transcribe a recording with the model's ASR prompt")
    add_generation_args(p)
    p.add_argument("audio")
    p.set_defaults(func=cmd_asr)
    p = sub.add_parser("tts", help="speak a text with the model's TTS prompt")
    add_generation_args(p)
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, help="output .wav")
    p.set_defaults(func=cmd_tts)

    p = sub.add_parser("serve", help="the voice server: web page at /, realtime WebSocket /v1/realtime, REST "
                       "/health, /v1/audio/speech, /v1/audio/transcriptions, /v1/voices")
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--config", help="server config (YAML or JSON; see docs/protocol.md and qinyu/server/config.py)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--library", help="voice library file")
    p.add_argument("--timbre", help="text-to-timbre folder (voices from descriptions)")
    p.add_argument("--max-steps", type=int, help="decode-step budget of one response (default 1024)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="`make demo`: the shipped qinyu-nano answers its bundled spoken questions, then "
                                    "the voice server serves it")
    p.add_argument("--out", default="demo-out", help="folder for the demo's outputs (reply wavs)")
    p.add_argument("--model", help="checkpoint folder (default: the shipped checkpoints/qinyu-nano)")
    p.add_argument("--no-serve", action="store_true", help="answer the bundled questions and stop")
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="server port (default 8000)")
    p.add_argument("--toy", action="store_true", help="instead: the whole recipe at toy scale in a few minutes")
    p.set_defaults(func=cmd_demo)

    from .nano.cli import add_speedrun_parser  # `qinyu speedrun` (`make speedrun`)

    add_speedrun_parser(sub)

    from .eval.cli import add_eval_parser  # `qinyu eval run|report` (benchmarks)

    add_eval_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .audio.io import AudioError
    from .codec import CodecError
    from .model import CheckpointError, ConfigError
    from .data.schema import DataError
    from .engine import EngineError
    from .train.recipe import RecipeError
    from .train.trainer import TrainError
    from .voice.campplus import SpeakerEncoderError
    from .voice.library import VoiceError
    from .voice.timbre import TimbreError
    from .duplex.asr import ASRError
    from .duplex.turn import TurnDetectorError
    from .server.config import ConfigError as ServerConfigError

    errors = (CheckpointError, ConfigError, CodecError, AudioError, VoiceError, TimbreError, SpeakerEncoderError,
              DataError, RecipeError, TrainError, EngineError, FileNotFoundError, ServerConfigError, ASRError,
              TurnDetectorError)
    try:
        return args.func(args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
