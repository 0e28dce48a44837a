"""The trainer: one torch-native loop for one process or many (``torchrun``).

* Distributed: DDP (gloo on CPU, nccl on GPU) or FSDP, chosen by the recipe; launched
  with ``torchrun --nproc_per_node N -m qinyu train --recipe FILE``.
* Loss normalisation is global: each process sums its token losses and divides by the
  token counts of the whole global batch (all-reduced first), so 1 process or N, with
  or without gradient accumulation, compute the same loss for the same global batch.
* Checkpoints are atomic (written to a temporary folder, then renamed) and hold the
  model, the optimiser, the step and the RNG states; data order is a pure function of
  the step, so ``--resume`` continues exactly where a killed run stopped.
* Metrics go to ``metrics.csv`` (and ``loss.png`` at the end); a progress bar shows
  loss, tokens/s and the ETA.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..audio.specaugment import SpecAugment
from ..data.dataset import Item, PackedData, collate_packs, read_prepared, render_prepared
from ..layout import TokenLayout, byte_tokenizer, load_tokenizer
from ..model import QinYuForConditionalGeneration, preset_config
from ..model.packed_attention import use_packed_attention
from ..model.presets import ctc_classes
from .recipe import Recipe, is_trainable

LATEST = "latest"
METRICS = "metrics.csv"
FIELDS = ["step", "loss", "text_loss", "audio_loss", "lr", "tokens", "tokens_per_s", "seconds"]


class TrainError(RuntimeError):
    pass


# -- set-up -------------------------------------------------------------------------------

def setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def all_reduce(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


def build_model(recipe: Recipe):
    """(model, tokenizer) from a checkpoint or a preset (``preset:tiny``)."""
    if recipe.init.startswith("preset:"):
        tokenizer = byte_tokenizer()
        torch.manual_seed(recipe.seed)
        model = QinYuForConditionalGeneration(preset_config(recipe.init.split(":", 1)[1],
                                                            TokenLayout.from_tokenizer(tokenizer), ctc_classes(tokenizer)))
        return model, tokenizer
    model = QinYuForConditionalGeneration.from_pretrained(recipe.init, dtype=torch.float32)
    return model, load_tokenizer(recipe.init)


def apply_freeze(model, recipe: Recipe) -> list[str]:
    """Set requires_grad by the recipe's patterns; returns the trainable names.

    With ``train_audio_embeddings`` the embedding (and untied lm_head) matrices train,
    but a gradient hook zeroes every row except the audio tokens, so with weight decay 0
    the text rows stay bit-identical."""
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name, recipe.trainable))
        if p.requires_grad:
            names.append(name)
    if recipe.train_audio_embeddings:
        layout = model.layout
        rows = torch.zeros(model.lm_head.weight.shape[0], 1)
        rows[layout.audio_base:layout.audio_end] = 1
        for matrix in {id(m): m for m in (model.model.get_input_embeddings().weight, model.lm_head.weight)}.values():
            if not matrix.requires_grad:
                matrix.requires_grad_(True)
                matrix.register_hook(lambda g: g * rows.to(g.device, g.dtype))
                names.append("(audio rows of) " + ("lm_head" if matrix is model.lm_head.weight else "embed_tokens"))
    if not names:
        raise TrainError(f"no parameter matches the trainable patterns {recipe.trainable}")
    return names


def set_train_mode(model) -> None:
    """``model.train()``, except that a wholly frozen audio encoder stays in eval mode: it
    runs as at inference (no dropout), so the LM learns from the frames it will be given.
    (The paper keeps SenseVoice frozen; a frozen encoder in train mode fed the LM
    dropout-noised frames it never sees when answering.)"""
    model.train()
    if frozen_encoder(model):
        model.audio_encoder.eval()


def frozen_encoder(model) -> bool:
    encoder = model.audio_encoder
    return encoder is not None and not any(p.requires_grad for p in encoder.parameters())


class EncoderFrameCache:
    """The frames a wholly frozen audio encoder (in eval mode, so deterministic) gives each
    utterance, computed the first time the utterance comes round and reused every later
    epoch: a stage then runs the encoder once per utterance instead of once per step it is
    in. Keyed by the features' buffer, which the rendered items hold for the whole run."""

    def __init__(self):
        self.frames: dict[tuple, torch.Tensor] = {}

    def __call__(self, model, features: list[torch.Tensor]) -> list[torch.Tensor]:
        keys = [(f.data_ptr(), tuple(f.shape)) for f in features]
        missing = list({k: i for i, k in enumerate(keys) if k not in self.frames}.values())
        if missing:
            with torch.no_grad():
                new = model.encode_audio([features[i] for i in missing])
            self.frames.update({keys[i]: frames for i, frames in zip(missing, new)})
        return [self.frames[k] for k in keys]


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``; ``step`` counts from 0."""
    warmup = max(1, round(recipe.warmup_ratio * recipe.steps)) if recipe.warmup_ratio > 0 else 0
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, recipe.steps - warmup)
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class RenderedFiles:
    """Rendered items of prepared files, kept between the trainings of one process: the
    speedrun's three stages read most of the same files (stage 1 every file of stage 0, stage
    2 most of stage 1's), and reading ~30,000 feature arrays and rendering ~20,000 samples
    costs ~15 s a stage. An entry is reused only for the same file (its path and its bytes)
    rendered the same way (tokenizer, interleave schedule, speaker embedding, audio frames
    per feature frame), and replaced when either changed. The arrays a file points to are
    taken as written once (prepare names them by digest and does not rewrite them). Items are
    never modified after rendering, so trainings can share them."""

    def __init__(self):
        self.entries: dict[tuple, tuple[str, list[Item]]] = {}

    def get(self, path, signature: tuple, render_file) -> list[Item]:
        path = Path(path).absolute()  # not resolved: a sample's arrays are found beside the path given
        if not path.is_file():
            return render_file()  # which names the missing file
        key, digest = (str(path), signature), hashlib.sha1(path.read_bytes()).hexdigest()
        if key not in self.entries or self.entries[key][0] != digest:
            self.entries[key] = (digest, render_file())
        return self.entries[key][1]


def render_signature(model, tokenizer) -> tuple:
    """What rendering a prepared sample depends on besides the sample."""
    encoder = model.audio_encoder
    return (hashlib.sha1(tokenizer.to_str().encode()).hexdigest(), str(model.config.interleave_schedule),
            model.config.use_speaker_embedding,
            None if encoder is None else (type(encoder).__name__, encoder.num_query_frames))


def load_data(recipe: Recipe, model, tokenizer, cache: RenderedFiles | None = None) -> PackedData:
    encoder = model.audio_encoder

    def frames(t):
        if encoder is None:
            raise TrainError("the data has user speech but the model has no audio encoder")
        return encoder.output_frames(t)

    def render_file(path):
        return [render_prepared(s, tokenizer, model.layout, frames, model.config.interleave_schedule,
                                model.config.use_speaker_embedding) for s in read_prepared(path)]

    signature = render_signature(model, tokenizer) if cache is not None else None
    by_file = []
    for f in recipe.data:
        items = render_file(f.path) if cache is None else cache.get(f.path, signature, lambda: render_file(f.path))
        by_file.append((items, f.weight))
    return PackedData(by_file, recipe.max_length, seed=recipe.seed, window=recipe.pack_window)


# -- checkpoints -------------------------------------------------------------------------

def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def full_states(model, optimizer, recipe: Recipe, world: int):
    """Full (unsharded) model and optimiser states; collective under FSDP (every rank calls it)."""
    if world > 1 and recipe.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)
    return model.state_dict(), optimizer.state_dict()


def load_optimizer(model, optimizer, state: dict, recipe: Recipe, world: int) -> None:
    if world > 1 and recipe.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def save_checkpoint(out: Path, step: int, model, tokenizer, optimizer, recipe: Recipe, rank: int = 0,
                    world: int = 1, final: bool = False) -> Path | None:
    """Write ``checkpoint-NNNNNN`` atomically (rank 0) and point ``latest`` at it; with
    ``final`` also the model alone to ``final/`` for the next stage."""
    model_state, optim_state = full_states(model, optimizer, recipe, world)
    if rank != 0:
        return None
    target = out / f"checkpoint-{step:06d}"
    tmp = out / f".checkpoint-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _save_model(model, model_state, tmp, tokenizer)
    torch.save(optim_state, tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "recipe": recipe.to_dict()}, indent=2,
                                                       default=str))
    _replace_dir(tmp, target)
    pointer = out / (LATEST + ".tmp")
    pointer.write_text(target.name)
    pointer.replace(out / LATEST)
    if final:
        tmp_final = out / ".final.tmp"
        shutil.rmtree(tmp_final, ignore_errors=True)
        _save_model(model, model_state, tmp_final, tokenizer)
        _replace_dir(tmp_final, out / "final")
    return target


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``; an existing target is moved aside first and
    removed only after the rename, so a kill never leaves no copy at all."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _save_model(model, state: dict, directory: Path, tokenizer) -> None:
    """save_pretrained for a state that may come from a sharded model."""
    from ..model.checkpoint import CONFIG_NAME, TOKENIZER_NAME, save_weights

    state = {k: v.detach().cpu() for k, v in state.items()}
    if model.tied:
        state.pop("lm_head.weight", None)
    save_weights(directory, [state])
    model.config.save(directory / CONFIG_NAME)
    tokenizer.save(str(directory / TOKENIZER_NAME))


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / LATEST
    if not pointer.is_file():
        return None
    path = out / pointer.read_text().strip()
    return path if path.is_dir() else None


# -- the loop ----------------------------------------------------------------------------

def wrap(model, recipe: Recipe, world: int, device):
    if world == 1:
        return model
    if recipe.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if recipe.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        return fully_shard(model)
    raise TrainError("strategy 'deepspeed' needs the deepspeed package and GPUs; it is not available here "
                     "(use ddp or fsdp)")


def train(recipe: Recipe, resume: bool = False, progress: bool = True, stop_after: int | None = None,
          rendered: RenderedFiles | None = None) -> dict:
    """Run a recipe. ``stop_after`` ends the run early after that many steps of this
    call (for tests); checkpoints follow ``save_every``. ``rendered`` keeps the rendered data
    for later trainings in this process (the speedrun's stages)."""
    rank, world, device = setup_distributed()
    out = Path(recipe.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if recipe.batch_size % (world * recipe.grad_accum):
        raise TrainError(f"batch_size {recipe.batch_size} must be a multiple of processes x grad_accum "
                         f"({world} x {recipe.grad_accum})")
    if recipe.train_audio_embeddings and recipe.strategy == "fsdp" and world > 1:
        raise TrainError("train_audio_embeddings masks gradient rows with a hook that FSDP's sharded parameters "
                         "bypass; use strategy ddp for this stage")
    torch.manual_seed(recipe.seed)
    model, tokenizer = build_model(recipe)
    use_packed_attention(model, recipe.attention == "packed")
    trainable = apply_freeze(model, recipe)
    data = load_data(recipe, model, tokenizer, rendered)
    start = 0
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None and (out / LATEST).is_file():
        raise TrainError(f"{out / LATEST} points to {(out / LATEST).read_text().strip()!r}, which does not exist; "
                         f"refusing to restart from step 0")
    if checkpoint is not None:
        state = QinYuForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).state_dict()
        model.load_state_dict(state)
        start = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    model.to(device)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine = wrap(model, recipe, world, device)  # before the optimiser: FSDP replaces the parameters
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, betas=tuple(recipe.betas), eps=recipe.eps,
                                  weight_decay=recipe.weight_decay)
    if checkpoint is not None:
        load_optimizer(model, optimizer, torch.load(checkpoint / "optimizer.pt", weights_only=False), recipe, world)
        set_rng_state(torch.load(checkpoint / "rng.pt", weights_only=False))
    metrics_path = out / METRICS
    if rank == 0:
        _truncate_metrics(metrics_path, start)
        (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2, default=str))
        print(f"[{recipe.name}] stage {recipe.stage}: {n_trainable:,} trainable parameters "
              f"({len(trainable)} tensors), {world} process(es), packs of <= {recipe.max_length} tokens "
              f"({data.efficiency():.1%} real), starting at step {start}")
        if data.dropped:
            print(f"[{recipe.name}] warning: {data.dropped} sample(s) longer than max_length {recipe.max_length} "
                  f"are left out; raise max_length to train on them")
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=recipe.steps, initial=start, desc=recipe.name, unit="step")
    last = {}
    # FSDP shards the encoder's parameters too, so only the sharded model can run it
    sharded = world > 1 and recipe.strategy == "fsdp"
    # augmented speech gives new frames at every step: nothing to cache
    augment = SpecAugment.from_dict(recipe.audio_augment) if recipe.audio_augment is not None else None
    frame_cache = EncoderFrameCache() if frozen_encoder(model) and not sharded and augment is None else None
    micro = recipe.batch_size // (world * recipe.grad_accum)
    t0 = time.time()
    step = start
    while step < recipe.steps and (stop_after is None or step - start < stop_after):
        lr = lr_at(step, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr
        packs = data.packs_for_step(step, recipe.batch_size)[rank::world]
        batches = [collate_packs(packs[i:i + micro], tokenizer.token_to_id("<|im_end|>"),
                                 mask=recipe.attention == "mask")
                   for i in range(0, len(packs), micro)]
        counts = torch.tensor([0.0, 0.0, 0.0])
        for b in batches:
            counts[0] += int((b["labels"][:, 1:] != -100).sum())
            counts[1] += int((b["audio_labels"][:, 1:, 1:] != -100).any(-1).sum())
            counts[2] += b["num_tokens"]
        counts = all_reduce(counts)
        n_text, n_audio = max(counts[0].item(), 1.0), max(counts[1].item(), 1.0)
        totals = torch.zeros(3)
        set_train_mode(model)
        # the augmentation's draws are a function of the step (and process), as the data order is
        augment_rng = np.random.default_rng([recipe.seed, step, rank])
        for i, b in enumerate(batches):
            if augment is not None and b["audio_features"] is not None:
                b["audio_features"] = [augment(f, augment_rng) for f in b["audio_features"]]
            inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items() if k != "num_tokens"}
            sync = i == len(batches) - 1 or world == 1 or recipe.strategy != "ddp"
            ctx = engine.no_sync() if not sync else contextlib.nullcontext()
            with ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.dtype == "bf16"):
                if frame_cache is not None and inputs["audio_features"] is not None:
                    inputs["audio_embeds"] = frame_cache(model, inputs.pop("audio_features"))
                # the loss's sums from the logits of the rows it reads only (model.loss_sums)
                sums = engine(**inputs, return_loss_sums=True).loss_sums
            text = sums.text_sum / n_text
            audio = sums.audio_sums.sum() / (7 * n_audio)
            loss = text + audio
            (loss * world).backward()  # DDP averages gradients over processes; undo that
            totals += torch.stack([loss.detach(), text.detach(), audio.detach()]).cpu()
        totals = all_reduce(totals)
        if recipe.clip:
            torch.nn.utils.clip_grad_norm_(params, recipe.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seconds = time.time() - t0
        last = {"step": step, "loss": totals[0].item(), "text_loss": totals[1].item(),
                "audio_loss": totals[2].item(), "lr": lr, "tokens": int(counts[2].item()),
                "tokens_per_s": counts[2].item() / max(seconds, 1e-9), "seconds": seconds}
        t0 = time.time()
        if rank == 0:
            _append_metrics(metrics_path, last)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}")
        if recipe.save_every and step % recipe.save_every == 0 and step < recipe.steps:
            save_checkpoint(out, step, model, tokenizer, optimizer, recipe, rank, world)
    if bar is not None:
        bar.close()
    if step == recipe.steps:
        save_checkpoint(out, step, model, tokenizer, optimizer, recipe, rank, world, final=True)
        if rank == 0:
            plot_metrics(metrics_path, out / "loss.png")
    if dist.is_initialized():
        dist.barrier()
    return last


def _truncate_metrics(path: Path, start: int) -> None:
    """Keep the rows up to ``start`` (a resumed run rewrites what came after)."""
    rows = []
    if path.is_file() and start > 0:
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)


def _append_metrics(path: Path, row: dict) -> None:
    with path.open("a", newline="") as f:
        csv.DictWriter(f, FIELDS).writerow({k: row[k] for k in FIELDS})


def read_metrics(path) -> list[dict]:
    with Path(path).open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_metrics(path: Path, png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = read_metrics(path)
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "text_loss", "audio_loss"):
        ax.plot(steps, [r[key] for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(path.parent.name)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
