"""Training recipes (YAML): which weights to start from, which data, which parameters
train, and the optimiser schedule. The three stages of the paper are three recipes:

* stage 0 ``align``: only the audio adapter and the speaker projector train (lr 1e-3),
  optionally also the new audio-token embedding rows (the reference meant to and did not);
* stage 1 ``pretrain``: everything but the audio encoder;
* stage 2 ``sft``: the same on instruction data; plus ``finetune`` for users' data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..audio.specaugment import SpecAugment, SpecAugmentError

STAGES = ("align", "pretrain", "sft", "finetune")
# Default freeze policies: name prefixes of the parameters that train.
STAGE_TRAINABLE = {
    "align": ["model.audio_projection.", "model.speaker_projection."],
    "pretrain": ["*", "!model.audio_model."],
    "sft": ["*", "!model.audio_model."],
    "finetune": ["*", "!model.audio_model."],
}


class RecipeError(ValueError):
    pass


@dataclass
class DataFile:
    path: str
    weight: float = 1.0


@dataclass
class Recipe:
    name: str
    stage: str
    out: str  # run folder (checkpoints, metrics)
    data: list  # [{"path": prepared .jsonl, "weight": 1.0}]
    init: str  # a checkpoint folder, or "preset:tiny" for a fresh random model
    steps: int = 100
    batch_size: int = 4  # packs per optimiser step, across all processes
    grad_accum: int = 1
    max_length: int = 512
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    clip: float = 1.0
    dtype: str = "fp32"  # fp32 | bf16
    seed: int = 44
    trainable: list | None = None  # name prefixes; "*" = all; "!prefix" excludes; default from stage
    train_audio_embeddings: bool = False  # stage 0: also train the audio-token rows of embed/lm_head
    strategy: str = "ddp"  # ddp | fsdp | deepspeed (when launched with torchrun)
    save_every: int = 0  # 0: only at the end
    log_every: int = 1
    pack_window: int = 256
    # packed: causal attention within each packed sample's span (qinyu.model.packed_attention);
    # mask: SDPA over the whole pack under the block-diagonal mask (the same outputs; the nano
    # speedrun's stages 1 and 2 took 1.3-1.4x as long with it, docs/nano.md)
    attention: str = "packed"
    # SpecAugment (``qinyu.audio.specaugment.SpecAugment`` settings, e.g. {"warp": 0.15,
    # "time_masks": 0}) on the user speech before the audio encoder, drawn anew at every step;
    # None: the features as prepared. With a frozen encoder the frames are then computed at
    # every step instead of once per utterance (``EncoderFrameCache``)
    audio_augment: dict | None = None

    def __post_init__(self):
        if self.stage not in STAGES:
            raise RecipeError(f"stage {self.stage!r} is not one of {STAGES}")
        if self.dtype not in ("fp32", "bf16"):
            raise RecipeError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.attention not in ("packed", "mask"):
            raise RecipeError(f"attention must be packed or mask, got {self.attention!r}")
        if self.strategy not in ("ddp", "fsdp", "deepspeed"):
            raise RecipeError(f"strategy must be ddp, fsdp or deepspeed, got {self.strategy!r}")
        for name in ("steps", "batch_size", "grad_accum", "max_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise RecipeError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.batch_size % self.grad_accum:
            raise RecipeError(f"batch_size {self.batch_size} must be a multiple of grad_accum {self.grad_accum}")
        if not isinstance(self.data, list) or not self.data:
            raise RecipeError("data must be a non-empty list of {path, weight}")
        self.data = [DataFile(**d) if isinstance(d, dict) else DataFile(str(d)) for d in self.data]
        if self.trainable is None:
            self.trainable = list(STAGE_TRAINABLE[self.stage])
        if self.audio_augment is not None:
            try:
                SpecAugment.from_dict(self.audio_augment)
            except SpecAugmentError as e:
                raise RecipeError(f"audio_augment: {e}") from None

    @classmethod
    def load(cls, path) -> "Recipe":
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise RecipeError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RecipeError(f"{path}: unknown field(s) {unknown}; known: {sorted(known)}")
        base = path.parent
        for key in ("out", "init"):  # paths are relative to the recipe file
            if key in raw and isinstance(raw[key], str) and not raw[key].startswith("preset:"):
                raw[key] = str((base / raw[key]).resolve())
        if isinstance(raw.get("data"), list):
            raw["data"] = [dict(d, path=str((base / d["path"]).resolve())) if isinstance(d, dict) and "path" in d
                           else d for d in raw["data"]]
        try:
            return cls(**raw)
        except TypeError as e:
            raise RecipeError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)


def is_trainable(name: str, patterns: list[str]) -> bool:
    """Patterns in order; a later match wins. "*" matches all, "!prefix" excludes."""
    verdict = False
    for p in patterns:
        neg = p.startswith("!")
        prefix = p[1:] if neg else p
        if prefix == "*" or name.startswith(prefix):
            verdict = not neg
    return verdict
