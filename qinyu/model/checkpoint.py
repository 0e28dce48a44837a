"""Checkpoint folders: reading (qinyu or official VITA-QinYu), validating, converting.

A qinyu folder holds ``config.json`` (``QinYuConfig``), ``model.safetensors`` or shards
listed in ``model.safetensors.index.json``, and ``tokenizer.json``. An official folder
has the official ``config.json`` (``model_type`` ``qwen3_sensevoice_xy`` or
``vita_utu_v1``) and the same weight and tokenizer files. Weights are read one file
at a time, so converting or loading never holds two copies of a model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..layout import TokenLayout, VocabularyError, load_tokenizer
from .config import ConfigError, QinYuConfig
from .official import AUDIO_MODEL_PREFIX, OFFICIAL_MODEL_TYPES, config_from_official, is_official, map_official_key

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"


class CheckpointError(ValueError):
    pass


@dataclass
class CheckpointFolder:
    directory: Path
    config: QinYuConfig
    weight_files: list[Path]
    official: str | None = None  # "VITA-QinYu-8B" / "VITA-QinYu-4B" for official folders

    def map_key(self, key: str) -> str | None:
        if self.official:
            return map_official_key(key, int(self.config.backbone["num_hidden_layers"]))
        return key

    def iter_weights(self) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
        """(file, {qinyu key: tensor}) per weight file."""
        from safetensors.torch import load_file

        for f in self.weight_files:
            try:
                tensors = load_file(str(f))
            except Exception as e:  # safetensors raises its own error types for corrupt files
                raise CheckpointError(f"cannot read weights {f}: {e}") from None
            mapped = {}
            for k, v in tensors.items():
                new = self.map_key(k)
                if new is not None:
                    mapped[new] = v
            yield f, mapped

    def tokenizer(self):
        return load_tokenizer(self.directory / TOKENIZER_NAME)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def weight_files(directory: Path) -> list[Path]:
    single, index = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        return [single]
    if not index.is_file():
        raise CheckpointError(f"{directory} has no weights: expected {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}")
    data = _read_json(index)
    if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise CheckpointError(f"{index} is malformed: it needs a 'weight_map' object")
    files = [directory / f for f in sorted(set(data["weight_map"].values()))]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"weight shard {f} listed in {index.name} is missing")
    return files


def weight_keys(files: list[Path]) -> list[str]:
    """Tensor names from the safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    keys = []
    for f in files:
        try:
            with safe_open(str(f), "pt") as sf:
                keys.extend(sf.keys())
        except Exception as e:
            raise CheckpointError(f"cannot read weights {f}: {e}") from None
    return keys


def tokenizer_layout(directory: Path) -> TokenLayout:
    path = directory / TOKENIZER_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {TOKENIZER_NAME}; the checkpoint's tokenizer is required to "
                              f"resolve the audio token ids")
    try:
        return TokenLayout.from_tokenizer(load_tokenizer(path))
    except (VocabularyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def open_checkpoint(directory) -> CheckpointFolder:
    """Validate a checkpoint folder (qinyu or official) and resolve its config."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"checkpoint folder not found: {directory}")
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint must be a folder, got a file: {directory}")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a qinyu checkpoint: {CONFIG_NAME} is missing")
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: config must be a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type", "qinyu")
    if is_official(raw):
        files = weight_files(directory)
        layout = tokenizer_layout(directory)
        has_audio = any(k.startswith(AUDIO_MODEL_PREFIX) for k in weight_keys(files))
        try:
            config = config_from_official(raw, layout, has_audio_model=has_audio)
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from None
        return CheckpointFolder(directory, config, files, official=OFFICIAL_MODEL_TYPES[model_type])
    if model_type != "qinyu":
        raise CheckpointError(f"{path}: unknown model_type {model_type!r}; expected 'qinyu' or an official "
                              f"VITA-QinYu type {sorted(OFFICIAL_MODEL_TYPES)}")
    try:
        config = QinYuConfig.from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    if (directory / TOKENIZER_NAME).is_file():
        found = tokenizer_layout(directory)
        if found != config.layout:
            diff = {k: (v, getattr(found, k)) for k, v in config.layout.to_dict().items() if getattr(found, k) != v}
            raise CheckpointError(f"{directory / TOKENIZER_NAME} does not match {CONFIG_NAME} token_layout "
                                  f"(config, tokenizer): {diff}")
    return CheckpointFolder(directory, config, weight_files(directory))


def check_tensors(expected: dict[str, torch.Size], tensors: dict[str, torch.Tensor], source: Path,
                  seen: set[str]) -> None:
    """Keys and shapes of one weight file against the model's."""
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: {len(unexpected)} unexpected weight(s) for this config, "
                              f"e.g. {unexpected[:5]}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k]):
            raise CheckpointError(f"{source}: weight {k} has shape {tuple(v.shape)}, the config needs "
                                  f"{tuple(expected[k])}")
        if k in seen:
            raise CheckpointError(f"{source}: weight {k} appears in more than one file")
        seen.add(k)


def check_complete(expected: dict, seen: set[str], directory: Path) -> None:
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckpointError(f"{directory}: {len(missing)} weight(s) missing, e.g. {missing[:5]}")


def save_weights(directory: Path, shards: list[dict[str, torch.Tensor]] | Iterator, total: int | None = None) -> None:
    """Write weight files atomically: one ``model.safetensors`` or numbered shards + index."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    written, weight_map, size = [], {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}.safetensors"
        tmp = directory / (name + ".tmp")
        save_file({k: v.contiguous() for k, v in shard.items()}, str(tmp), metadata={"format": "pt"})
        written.append((tmp, name))
        weight_map.update({k: name for k in shard})
        size += sum(v.numel() * v.element_size() for v in shard.values())
    if len(written) == 1:
        written[0][0].replace(directory / WEIGHTS_NAME)
        return
    n = len(written)
    for tmp, name in written:
        final = name.replace(".safetensors", f"-of-{n:05d}.safetensors")
        tmp.replace(directory / final)
        for k, v in list(weight_map.items()):
            if v == name:
                weight_map[k] = final
    index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}
    tmp = directory / (WEIGHTS_INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    tmp.replace(directory / WEIGHTS_INDEX_NAME)


def _companion_files(sensevoice, campplus, xy) -> list[tuple[Path, str, str | None, object]]:
    """(source file, path inside the checkpoint, config field, value) for each companion."""
    files = []
    if sensevoice:
        mvn = Path(sensevoice) / "am.mvn"
        if not mvn.is_file():
            raise CheckpointError(f"SenseVoiceSmall folder {sensevoice} has no am.mvn")
        files.append((mvn, "am.mvn", "cmvn", "am.mvn"))
    if campplus:
        if not Path(campplus).is_file():
            raise CheckpointError(f"CAM++ weights not found: {campplus} (campplus_cn_common.bin)")
        files.append((Path(campplus), "campplus_cn_common.bin", "speaker_encoder", "campplus_cn_common.bin"))
    if xy:
        for name in ("xy_tokenizer.ckpt", "xy_tokenizer_config.yaml"):
            if not (Path(xy) / name).is_file():
                raise CheckpointError(f"XY-Tokenizer folder {xy} has no {name}")
        files.append((Path(xy) / "xy_tokenizer.ckpt", "codec/xy_tokenizer.ckpt", None, None))
        files.append((Path(xy) / "xy_tokenizer_config.yaml", "codec/xy_tokenizer_config.yaml", "codec",
                      {"type": "xy_tokenizer", "path": "codec"}))
    return files


def convert_official(source, out, dtype: torch.dtype | None = None, progress: bool = True, sensevoice=None,
                     campplus=None, xy=None) -> Path:
    """Write an official VITA-QinYu folder as a qinyu checkpoint, one shard at a time.

    The companions that live in other bundles can be brought in at the same time, so the
    checkpoint is complete: ``sensevoice`` (the SenseVoiceSmall folder: its ``am.mvn``),
    ``campplus`` (``campplus_cn_common.bin``) and ``xy`` (a folder with
    ``xy_tokenizer.ckpt`` and ``xy_tokenizer_config.yaml``)."""
    from tqdm import tqdm

    from .modeling import QinYuForConditionalGeneration

    folder = open_checkpoint(source)
    if not folder.official:
        raise CheckpointError(f"{folder.directory} is already a qinyu checkpoint, not an official folder")
    out = Path(out)
    if out.resolve() == folder.directory.resolve():
        raise CheckpointError("--out must differ from the official folder")
    with torch.device("meta"):
        expected = {k: v.shape for k, v in QinYuForConditionalGeneration(folder.config).state_dict().items()}
    if folder.config.backbone.get("tie_word_embeddings"):
        expected.pop("lm_head.weight")
    seen: set[str] = set()

    def shards():
        bar = tqdm(folder.weight_files, desc=f"converting {folder.official}", unit="file", disable=not progress)
        for f, tensors in folder.iter_weights():
            check_tensors(expected, tensors, f, seen)
            if dtype is not None:
                tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
            yield tensors
            bar.update(1)
        bar.close()

    companions = _companion_files(sensevoice, campplus, xy)  # checked before the long part
    save_weights(out, shards())
    check_complete(expected, seen, folder.directory)
    for src, rel, field, value in companions:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel)
        if field:
            setattr(folder.config, field, value)
    folder.config.save(out / CONFIG_NAME)
    folder.tokenizer().save(str(out / TOKENIZER_NAME))
    return out
