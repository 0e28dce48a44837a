"""The nano codec: a source-filter vocoder with quantised parameters, fitted in minutes
on a CPU. 8 codebooks of 1024 codes per frame (12.5 Hz by default):

* **codebook 0 — pitch**: code 0 is an unvoiced frame; otherwise the frame's log-F0
  contour as a line, ``1 + level * len(slopes) + slope``, with the level on a
  half-semitone grid from ``f0_min`` and the slope from a fixed set (cents per 10 ms).
  Pitch is explicit, so re-pitching is integer arithmetic on codebook 0
  (:func:`shift_pitch`: +2 levels per semitone).
* **codebooks 1..7 — spectrum**: residual vector quantisation (k-means fitted) of the
  frame's spectro-temporal envelope: log band densities of ``subframes`` sub-frames
  on a mel scale, plus a voicing strength per sub-frame.

Analysis uses Praat's autocorrelation pitch (parselmouth) and an STFT; synthesis builds
a pulse-train / noise excitation and shapes it in the STFT domain, overlap-added. The
synthesiser is written as a stream (:class:`NanoSynth`); offline decoding is the same
stream fed in one piece, so streaming output equals offline output exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

UNVOICED = 0


@dataclass
class NanoCodecConfig:
    sample_rate: int = 16000
    frame_rate: float = 12.5
    hop: int = 160  # 10 ms analysis/synthesis hop
    subframes: int = 4  # spectral envelopes per frame
    n_fft: int = 512
    win: int = 400  # 25 ms Hann window
    n_bands: int = 24
    f0_min: float = 55.0  # level 0 of the pitch grid
    num_levels: int = 104  # half-semitone steps: 55 Hz .. ~1.1 kHz
    level_step_cents: float = 50.0
    slopes: list = field(default_factory=lambda: [-40.0, -20.0, -10.0, -4.0, 0.0, 4.0, 10.0, 20.0, 40.0])
    pitch_floor: float = 60.0
    pitch_ceiling: float = 800.0
    log_floor: float = -14.0  # floor of the log band power density
    voicing_weight: float = 3.0  # weight of the voicing dims relative to one log band in the RVQ
    noise_seed: int = 1234

    def __post_init__(self):
        spf = self.sample_rate / self.frame_rate
        if abs(spf - round(spf)) > 1e-9 or round(spf) % self.hop:
            raise ValueError(f"frame of {spf} samples is not a whole number of {self.hop}-sample hops")
        if self.hops_per_frame % self.subframes:
            raise ValueError(f"{self.hops_per_frame} hops per frame do not split into {self.subframes} sub-frames")
        if 1 + self.num_levels * len(self.slopes) > 1024:
            raise ValueError("pitch grid needs more than 1024 codes")

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def hops_per_frame(self) -> int:
        return self.samples_per_frame // self.hop

    @property
    def hops_per_subframe(self) -> int:
        return self.hops_per_frame // self.subframes

    @property
    def vector_size(self) -> int:
        return self.subframes * (self.n_bands + 1)

    def to_dict(self) -> dict:
        return asdict(self)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


def band_matrices(cfg: NanoCodecConfig) -> tuple[np.ndarray, np.ndarray]:
    """(analysis [B, bins]: rows average power over a triangular mel band;
    synthesis [bins, B]: linear interpolation of log band values over mel)."""
    bins = cfg.n_fft // 2 + 1
    freqs = np.linspace(0, cfg.sample_rate / 2, bins)
    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(cfg.sample_rate / 2), cfg.n_bands + 2))
    analysis = np.zeros((cfg.n_bands, bins))
    for b in range(cfg.n_bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        tri = np.clip(np.minimum(up, down), 0, None)
        if tri.sum() == 0:  # band narrower than one bin: take the nearest bin
            tri[np.argmin(np.abs(freqs - mid))] = 1.0
        analysis[b] = tri / tri.sum()
    centers = hz_to_mel(edges[1:-1])
    mel = hz_to_mel(freqs)
    synthesis = np.zeros((bins, cfg.n_bands))
    for i, m in enumerate(mel):
        j = np.searchsorted(centers, m)
        if j == 0:
            synthesis[i, 0] = 1
        elif j >= cfg.n_bands:
            synthesis[i, -1] = 1
        else:
            w = (m - centers[j - 1]) / (centers[j] - centers[j - 1])
            synthesis[i, j - 1], synthesis[i, j] = 1 - w, w
    return analysis, synthesis


@dataclass
class HopFeatures:
    """Per-hop analysis: F0 in Hz (0 = unvoiced), voicing strength 0..1, log band density."""

    f0: np.ndarray  # [H]
    strength: np.ndarray  # [H]
    log_bands: np.ndarray  # [H, B]


def analyse(wav: np.ndarray, cfg: NanoCodecConfig) -> HopFeatures:
    """Analyse a 16 kHz mono waveform padded to whole frames (``len % samples_per_frame == 0``)."""
    import parselmouth

    hop, win = cfg.hop, cfg.win
    num_hops = len(wav) // hop
    window = np.hanning(win + 2)[1:-1]
    padded = np.pad(wav, (win, win))
    centers = np.arange(num_hops) * hop + hop // 2 + win
    idx = centers[:, None] + np.arange(-win // 2, win // 2)[None, :]
    frames = padded[idx] * window
    power = np.abs(np.fft.rfft(frames, n=cfg.n_fft)) ** 2 / np.sum(window ** 2)
    analysis, _ = band_matrices(cfg)
    log_bands = np.maximum(np.log(power @ analysis.T + 1e-30), cfg.log_floor)

    f0 = np.zeros(num_hops)
    strength = np.zeros(num_hops)
    if np.abs(wav).max() > 0:
        snd = parselmouth.Sound(wav.astype(np.float64), sampling_frequency=cfg.sample_rate)
        pitch = snd.to_pitch_ac(time_step=hop / cfg.sample_rate, pitch_floor=cfg.pitch_floor,
                                pitch_ceiling=cfg.pitch_ceiling)
        times = pitch.xs()
        values = pitch.selected_array["frequency"]
        strengths = pitch.selected_array["strength"]
        if len(times):
            t = (np.arange(num_hops) * hop + hop / 2) / cfg.sample_rate
            nearest = np.clip(np.round((t - times[0]) / pitch.dt).astype(int), 0, len(times) - 1)
            inside = np.abs(times[nearest] - t) <= pitch.dt
            f0 = np.where(inside, values[nearest], 0.0)
            strength = np.where(f0 > 0, np.clip(strengths[nearest], 0, 1), 0.0)
    return HopFeatures(f0=f0, strength=strength, log_bands=log_bands)


def cents(f_hz, ref):
    return 1200.0 * np.log2(np.asarray(f_hz) / ref)


def pitch_codes(f0_hops: np.ndarray, cfg: NanoCodecConfig) -> np.ndarray:
    """Per-frame codebook-0 codes from per-hop F0 (0 = unvoiced)."""
    hpf = cfg.hops_per_frame
    f0 = f0_hops.reshape(-1, hpf)
    offsets = np.arange(hpf) - (hpf - 1) / 2
    slopes = np.asarray(cfg.slopes)
    codes = np.zeros(len(f0), dtype=np.int64)
    for t, frame in enumerate(f0):
        voiced = frame > 0
        if not voiced.any():
            continue
        c = cents(frame[voiced], cfg.f0_min)
        x = offsets[voiced]
        if voiced.sum() >= 2:
            slope, level = np.polyfit(x, c, 1)
        else:  # a single voiced hop: a flat contour at its pitch
            slope, level = 0.0, float(c[0])
        lvl = int(np.clip(np.round(level / cfg.level_step_cents), 0, cfg.num_levels - 1))
        s = int(np.argmin(np.abs(slopes - slope)))
        codes[t] = 1 + lvl * len(slopes) + s
    return codes


def pitch_contour(codes: np.ndarray, cfg: NanoCodecConfig) -> np.ndarray:
    """Per-hop F0 in Hz (0 = unvoiced) from codebook-0 codes."""
    codes = np.asarray(codes, dtype=np.int64)
    hpf = cfg.hops_per_frame
    offsets = np.arange(hpf) - (hpf - 1) / 2
    n_slopes = len(cfg.slopes)
    voiced = (codes > UNVOICED) & (codes <= cfg.num_levels * n_slopes)
    lvl = np.where(voiced, (codes - 1) // n_slopes, 0)
    slope = np.asarray(cfg.slopes)[np.where(voiced, (codes - 1) % n_slopes, 0)]
    c = lvl[:, None] * cfg.level_step_cents + slope[:, None] * offsets[None, :]
    f0 = cfg.f0_min * 2.0 ** (c / 1200.0)
    return np.where(voiced[:, None], f0, 0.0).reshape(-1)


def shift_pitch(codes: np.ndarray, semitones: float, cfg: NanoCodecConfig | None = None) -> np.ndarray:
    """Re-pitch codebook 0 by ``semitones`` (rounded to the half-semitone grid);
    unvoiced frames stay unvoiced, levels are clipped to the grid."""
    cfg = cfg or NanoCodecConfig()
    codes = np.asarray(codes, dtype=np.int64).copy()
    n_slopes = len(cfg.slopes)
    voiced = codes > UNVOICED
    lvl = (codes - 1) // n_slopes
    s = (codes - 1) % n_slopes
    lvl = np.clip(lvl + int(round(semitones * 100 / cfg.level_step_cents)), 0, cfg.num_levels - 1)
    codes[voiced] = (1 + lvl * n_slopes + s)[voiced]
    return codes


def frame_vectors(feats: HopFeatures, cfg: NanoCodecConfig) -> np.ndarray:
    """[T, D] spectro-temporal vectors: per sub-frame, the log of the mean band power
    over its hops, then the mean voicing strength (weighted)."""
    hps = cfg.hops_per_subframe
    sub_bands = np.log(np.exp(feats.log_bands).reshape(-1, hps, cfg.n_bands).mean(1))
    sub_bands = np.maximum(sub_bands, cfg.log_floor)
    sub_voicing = feats.strength.reshape(-1, hps).mean(1) * cfg.voicing_weight
    per_sub = np.concatenate([sub_bands, sub_voicing[:, None]], axis=1)  # [T*S, B+1]
    return per_sub.reshape(-1, cfg.vector_size)


def vectors_to_hops(vectors: np.ndarray, cfg: NanoCodecConfig) -> tuple[np.ndarray, np.ndarray]:
    """[T, D] -> (log band density [H, B], voicing strength [H])."""
    per_sub = vectors.reshape(-1, cfg.n_bands + 1)
    bands = np.repeat(per_sub[:, :-1], cfg.hops_per_subframe, axis=0)
    voicing = np.repeat(np.clip(per_sub[:, -1] / cfg.voicing_weight, 0, 1), cfg.hops_per_subframe)
    return bands, voicing


def min_phase_filter(log_magnitude: np.ndarray, n_fft: int) -> np.ndarray:
    """Minimum-phase spectra [H, bins] with the given log magnitudes (folded real
    cepstrum). A minimum-phase vocal-tract filter spreads each pulse's energy in time as
    speech does, instead of the zero-phase filter's symmetric spike: a more natural
    sound and a lower peak level for the same loudness."""
    cep = np.fft.irfft(log_magnitude, n=n_fft, axis=-1)
    fold = np.zeros_like(cep)
    fold[..., 0] = cep[..., 0]
    fold[..., 1:n_fft // 2] = 2.0 * cep[..., 1:n_fft // 2]
    fold[..., n_fft // 2] = cep[..., n_fft // 2]
    return np.exp(np.fft.rfft(fold, n=n_fft, axis=-1))


class NanoSynth:
    """Streaming source-filter synthesiser.

    ``push(f0, voicing, log_bands)`` takes parameters for some more hops and returns the
    samples that are final; ``flush()`` ends the stream. Excitation: a pulse train
    (phase carried across calls) in voiced hops, seeded white noise otherwise. Each hop's
    STFT frame of the excitation is shaped by that hop's band envelope and overlap-added.
    """

    def __init__(self, cfg: NanoCodecConfig):
        self.cfg = cfg
        _, self.interp = band_matrices(cfg)
        self.window = np.hanning(cfg.win + 2)[1:-1]
        self.rng = np.random.default_rng(cfg.noise_seed)
        self.phase = 0.0
        self.excitation = np.zeros(0)  # from sample 0 (only the needed tail is kept)
        self.exc_start = 0  # global index of excitation[0]
        self.gains: list[np.ndarray] = []  # per hop not yet filtered
        self.next_hop = 0  # next hop whose frame is filtered
        self.out = np.zeros(0)  # overlap-add buffer starting at out_start
        self.norm = np.zeros(0)
        self.out_start = 0
        self.total_hops = 0
        self.done = False

    def _excite(self, f0: np.ndarray, voicing: np.ndarray) -> np.ndarray:
        hop, sr = self.cfg.hop, self.cfg.sample_rate
        out = np.empty(len(f0) * hop)
        for h, (f, v) in enumerate(zip(f0, voicing)):
            seg = out[h * hop:(h + 1) * hop]
            noise = self.rng.standard_normal(hop)  # drawn every hop: keeps the stream deterministic
            if f > 0 and v >= 0.5:
                inc = f / sr
                ph = self.phase + inc * np.arange(1, hop + 1)
                pulses = np.floor(ph) > np.floor(np.concatenate([[self.phase], ph[:-1]]))
                seg[:] = pulses * np.sqrt(sr / f)
                self.phase = ph[-1] % 1.0
            else:
                seg[:] = noise
        return out

    def push(self, f0, voicing, log_bands) -> np.ndarray:
        if self.done:
            raise RuntimeError("stream already flushed")
        self.gains.extend(min_phase_filter(0.5 * (np.asarray(log_bands) @ self.interp.T), self.cfg.n_fft))
        self.excitation = np.concatenate([self.excitation, self._excite(np.asarray(f0), np.asarray(voicing))])
        self.total_hops += len(f0)
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        out = self._run(final=True)
        self.done = True
        return out

    def _run(self, final: bool) -> np.ndarray:
        cfg = self.cfg
        hop, half = cfg.hop, cfg.win // 2
        exc_end = self.exc_start + len(self.excitation)
        while self.next_hop < self.total_hops:
            center = self.next_hop * hop + hop // 2
            lo, hi = center - half, center + half
            if hi > exc_end and not final:
                break
            seg = np.zeros(cfg.win)
            a, b = max(lo, self.exc_start), min(hi, exc_end)
            seg[a - lo:b - lo] = self.excitation[a - self.exc_start:b - self.exc_start]
            spec = np.fft.rfft(seg * self.window, n=cfg.n_fft) * self.gains[self.next_hop - (self.total_hops - len(self.gains))]
            frame = np.fft.irfft(spec, n=cfg.n_fft)[:cfg.win] * self.window
            self._add(lo, frame, self.window ** 2)
            self.next_hop += 1
        # drop gains of filtered hops
        keep = self.total_hops - self.next_hop
        self.gains = self.gains[len(self.gains) - keep:] if keep else []
        # samples before the next frame's window start are final
        limit = self.total_hops * hop if final else self.next_hop * hop + hop // 2 - half
        out = self._emit(limit)
        # trim excitation no longer needed
        need_from = self.next_hop * hop + hop // 2 - half
        if need_from > self.exc_start:
            cut = min(need_from - self.exc_start, len(self.excitation))
            self.excitation = self.excitation[cut:]
            self.exc_start += cut
        return out

    def _add(self, start: int, frame: np.ndarray, weight: np.ndarray):
        if start < self.out_start:  # part before the emitted region (only at stream start, lo < 0)
            cut = self.out_start - start
            frame, weight, start = frame[cut:], weight[cut:], self.out_start
        end = start + len(frame)
        need = end - self.out_start
        if need > len(self.out):
            self.out = np.concatenate([self.out, np.zeros(need - len(self.out))])
            self.norm = np.concatenate([self.norm, np.zeros(need - len(self.norm))])
        self.out[start - self.out_start:end - self.out_start] += frame
        self.norm[start - self.out_start:end - self.out_start] += weight

    def _emit(self, limit: int) -> np.ndarray:
        n = limit - self.out_start
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        if n > len(self.out):
            self.out = np.concatenate([self.out, np.zeros(n - len(self.out))])
            self.norm = np.concatenate([self.norm, np.zeros(n - len(self.norm))])
        chunk = self.out[:n] / np.maximum(self.norm[:n], 1e-3)
        self.out, self.norm = self.out[n:], self.norm[n:]
        self.out_start = limit
        return chunk.astype(np.float32)


# -- the codec ---------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from ..audio.io import check_waveform, resample  # noqa: E402
from .base import CODEC_CONFIG, Codec, CodecError, register_codec  # noqa: E402
from .kmeans import rvq_decode, rvq_encode, rvq_fit  # noqa: E402

WEIGHTS = "codec.safetensors"


def _slice_hops(feats: HopFeatures, start: int, stop: int) -> HopFeatures:
    return HopFeatures(feats.f0[start:stop], feats.strength[start:stop], feats.log_bands[start:stop])


@register_codec("nano")
class NanoCodec(Codec):
    """See the module docstring. Build with :meth:`fit`, or :meth:`load` a fitted one."""

    cheap_streaming = True

    def __init__(self, config: NanoCodecConfig, books: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 info: dict | None = None):
        self.config = config
        if books.shape != (self.num_codebooks - 1, self.codebook_size, config.vector_size):
            raise CodecError(f"nano codec codebooks have shape {books.shape}, expected "
                             f"{(self.num_codebooks - 1, self.codebook_size, config.vector_size)}")
        self.books = books.astype(np.float32)
        self.mean = mean.astype(np.float32)
        self.std = std.astype(np.float32)
        self.info = info or {}
        self.frame_rate = config.frame_rate
        self.input_sample_rate = config.sample_rate
        self.output_sample_rate = config.sample_rate

    # -- fitting ----------------------------------------------------------------------
    @classmethod
    def fit(cls, waveforms, config: NanoCodecConfig | None = None, iterations: int = 20, seed: int = 0,
            progress=None) -> "NanoCodec":
        """Fit the spectral codebooks on ``waveforms`` (an iterable of (wav, sample_rate)).

        Every hop offset of the frame grid contributes its own frames, which multiplies
        the training vectors by ``hops_per_frame`` for the same audio."""
        cfg = config or NanoCodecConfig()
        vectors, seconds = [], 0.0
        for wav, sr in waveforms:
            wav = cls._prepare(check_waveform(wav, sr), sr, cfg)
            seconds += len(wav) / cfg.sample_rate
            feats = analyse(wav, cfg)
            hpf = cfg.hops_per_frame
            for offset in range(hpf):
                n = (len(feats.f0) - offset) // hpf * hpf
                if n > 0:
                    vectors.append(frame_vectors(_slice_hops(feats, offset, offset + n), cfg))
        if not vectors:
            raise CodecError("no audio to fit the nano codec on")
        data = np.concatenate(vectors)
        mean, std = data.mean(0), data.std(0) + 1e-3
        books = rvq_fit((data - mean) / std, stages=7, k=1024, iterations=iterations, seed=seed, progress=progress)
        info = {"fitted_on_seconds": round(seconds, 1), "training_vectors": int(len(data)),
                "kmeans_iterations": iterations, "seed": seed}
        return cls(cfg, books, mean, std, info)

    # -- encode / decode ---------------------------------------------------------------
    @staticmethod
    def _prepare(wav: np.ndarray, sample_rate: int, cfg: NanoCodecConfig) -> np.ndarray:
        wav = resample(wav, sample_rate, cfg.sample_rate).astype(np.float64)
        frames = max(1, -(-len(wav) // cfg.samples_per_frame))
        return np.pad(wav, (0, frames * cfg.samples_per_frame - len(wav)))

    def encode(self, wav, sample_rate: int) -> np.ndarray:
        cfg = self.config
        wav = self._prepare(check_waveform(wav, sample_rate), sample_rate, cfg)
        feats = analyse(wav, cfg)
        vectors = (frame_vectors(feats, cfg) - self.mean) / self.std
        return np.concatenate([pitch_codes(feats.f0, cfg)[None], rvq_encode(vectors, self.books)]).astype(np.int64)

    def hop_parameters(self, codes: np.ndarray):
        """(F0 [H], voicing [H], log bands [H, B]) for (8, T) codes."""
        cfg = self.config
        f0 = pitch_contour(codes[0], cfg)
        vectors = rvq_decode(codes[1:], self.books) * self.std + self.mean
        log_bands, voicing = vectors_to_hops(vectors, cfg)
        return f0, voicing, log_bands

    def decode(self, codes) -> np.ndarray:
        stream = self.stream_decoder()
        out = stream.push(codes)
        return np.concatenate([out, stream.flush()])

    def stream_decoder(self, **_ignored) -> "NanoStreamDecoder":
        """Exact streaming: the output equals :meth:`decode` for any chunking."""
        return NanoStreamDecoder(self)

    # -- folder ------------------------------------------------------------------------
    def save(self, directory) -> Path:
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (WEIGHTS + ".tmp")
        save_file({"books": self.books, "mean": self.mean, "std": self.std}, str(tmp))
        tmp.replace(directory / WEIGHTS)
        meta = {"type": "nano", "config": self.config.to_dict(), "frame_rate": self.frame_rate,
                "sample_rate": self.output_sample_rate, "num_codebooks": 8, "codebook_size": 1024, "info": self.info}
        tmp = directory / (CODEC_CONFIG + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(directory / CODEC_CONFIG)
        return directory

    @classmethod
    def load(cls, directory) -> "NanoCodec":
        from safetensors.numpy import load_file

        directory = Path(directory)
        meta = json.loads((directory / CODEC_CONFIG).read_text())
        try:
            cfg = NanoCodecConfig(**meta["config"])
        except (TypeError, KeyError, ValueError) as e:
            raise CodecError(f"{directory / CODEC_CONFIG}: bad nano codec config: {e}") from None
        if not (directory / WEIGHTS).is_file():
            raise CodecError(f"nano codec weights missing: {directory / WEIGHTS}")
        w = load_file(str(directory / WEIGHTS))
        return cls(cfg, w["books"], w["mean"], w["std"], meta.get("info"))



class NanoStreamDecoder:
    def __init__(self, codec: NanoCodec):
        self.codec = codec
        self.synth = NanoSynth(codec.config)

    def push(self, codes) -> np.ndarray:
        codes = self.codec.check_codes(codes)
        if codes.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        return self.synth.push(*self.codec.hop_parameters(codes))

    def flush(self) -> np.ndarray:
        return self.synth.flush()
