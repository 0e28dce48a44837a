"""Attention over packed training sequences, one sample at a time.

The trainer packs several samples into one row of up to ``max_length`` tokens
(``qinyu.data.dataset.collate_packs``): each sample's positions restart at 0, and a
block-diagonal causal mask keeps the samples apart. With that mask, SDPA still computes
every query against every key of the row and throws most of it away: the nano stages'
packs hold ~12 samples each, so ~90 % of the attention work is masked out.
``packed_attention_forward`` instead attends causally within each sample's own span (found
from the position ids' restarts): the same outputs at the real positions, with only the
work the mask keeps.

On the CPU a step's many short spans make many small products, whose per-call cost
outweighs their arithmetic; the "grouped" kernel pads spans of like length to a common
length and attends each group of them in one batched product (a key-padding mask keeps
the padding out), which on the nano stages is faster than one product per span
(bench/attention.py).

It is registered with transformers (``PACKED_ATTENTION``, and one name per kernel) and
used only while training (``use_packed_attention``): with it the backbone gets no mask at
all, so it must not see a cache, or padding that is not a span of its own (the collator
numbers a row's padding as one more span). Checkpoints keep ``attn_implementation`` as
configured, and inference uses that.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

PACKED_ATTENTION = "qinyu_packed"  # the kernel chosen by device (packed_attention_forward)
KERNELS = ("sdpa", "math", "grouped")
# "grouped": spans are padded to at most this many times their own length (short spans to
# at least GROUP_MIN_LENGTH positions), so the padded work stays near the spans' own
GROUP_GROWTH = 1.25
GROUP_MIN_LENGTH = 16


class PackedAttentionError(ValueError):
    pass


def span_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """[B, L] position ids that restart at 0 for each sample -> per row, the half-open
    [start, end) spans of its samples."""
    if position_ids.ndim != 2:
        raise PackedAttentionError(f"packed attention needs [batch, length] position ids, "
                                   f"got {tuple(position_ids.shape)}")
    length = position_ids.shape[1]
    rows = []
    for row in position_ids.detach().cpu():
        starts = torch.nonzero(row == 0).flatten().tolist()
        if not starts or starts[0] != 0:
            raise PackedAttentionError("packed attention needs every row to start a sample at position 0")
        rows.append(list(zip(starts, starts[1:] + [length])))
    return rows


def causal_attention(query, key, value, scale: float | None = None, kernel: str = "sdpa"):
    """Causal attention of one span, [1, H, n, D] x [1, KV, n, D] -> [1, H, n, D].

    ``kernel`` "sdpa": torch's fused kernels. "math": explicit matmuls and softmax, whose
    autograd backward on CPU is far cheaper than SDPA's: on short spans the CPU flash
    kernel's backward costs ~7x its forward (bench/attention.py measures both)."""
    if kernel == "sdpa":
        return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale,
                                              enable_gqa=query.shape[1] != key.shape[1])
    n = query.shape[2]
    return masked_attention(query, key, value, torch.ones(n, n, dtype=torch.bool, device=query.device).triu(1), scale)


def masked_attention(query, key, value, hidden: torch.Tensor, scale: float | None = None):
    """Explicit softmax attention, [..., H, n, D] x [..., KV, n, D] -> [..., H, n, D], with the
    keys where ``hidden`` ([..., 1, n, n] or [n, n], the same for every head; True = hidden)
    left out.

    Written for the CPU's per-call costs: the query heads that share a key/value head are
    stacked along the positions ([..., KV, heads/KV * n, D]), so grouped-query keys and values
    are used as they are instead of repeated to every head; the scale multiplies the queries
    (n x D) rather than the scores (n x n); the mask is added as 0 / -inf, whose backward is
    free where ``masked_fill`` has one of its own. (Head h reads key/value head h // (H/KV),
    as ``repeat_interleave`` would give it.)"""
    *lead, heads, n, d = query.shape
    kv_heads = key.shape[-3]
    rep = heads // kv_heads
    scale = scale if scale is not None else d ** -0.5
    q = (query * scale).reshape(*lead, kv_heads, rep * n, d)
    scores = (q @ key.transpose(-1, -2)).reshape(*lead, kv_heads, rep, n, n)
    bias = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device).masked_fill(hidden, float("-inf"))
    weights = (scores + bias.unsqueeze(-3)).softmax(-1)  # fp32 softmax, as autocast runs it
    out = weights.to(value.dtype).reshape(*lead, kv_heads, rep * n, n) @ value
    return out.reshape(*lead, heads, n, d)


def span_groups(lengths: list[int]) -> list[list[int]]:
    """Indices of spans grouped by length for the "grouped" kernel: longest first, a group
    takes the next span while the group's (first, longest) length is at most
    ``GROUP_GROWTH`` times the span's own (or ``GROUP_MIN_LENGTH``)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[groups[-1][0]] <= max(GROUP_GROWTH * lengths[i], GROUP_MIN_LENGTH):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def grouped_attention(query, key, value, spans: list[list[tuple[int, int]]], scale: float | None = None):
    """Causal attention within every span, spans of like length batched: query [B, H, L, D],
    key/value [B, KV, L, D] -> [B, L, H, D]. Each group's spans are gathered (padded at the
    end to the group's longest), attended under a causal mask that also hides the padding
    keys, and the real positions put back in order. Gathers are ``index_select`` (their
    backward, an ``index_add``, costs a fraction of advanced indexing's ``index_put``)."""
    b, h, length, d = query.shape
    kv_heads = key.shape[1]
    device = query.device
    flat = [(r * length + s, e - s) for r, row in enumerate(spans) for s, e in row]  # (offset in B*L, length)
    q = query.transpose(1, 2).reshape(b * length, h * d)
    k = key.transpose(1, 2).reshape(b * length, kv_heads * d)
    v = value.transpose(1, 2).reshape(b * length, kv_heads * d)
    outputs, positions = [], []
    for group in span_groups([n for _, n in flat]):
        n, g = flat[group[0]][1], len(group)
        steps = torch.arange(n, device=device)
        starts = torch.tensor([flat[i][0] for i in group], device=device)
        sizes = torch.tensor([flat[i][1] for i in group], device=device)
        real = steps[None, :] < sizes[:, None]  # [g, n]
        # padding reads its span's start
        index = torch.where(real, starts[:, None] + steps[None, :], starts[:, None]).flatten()
        qg, kg, vg = (t.index_select(0, index).view(g, n, heads, d).transpose(1, 2)  # [g, heads (KV heads), n, D]
                      for t, heads in ((q, h), (k, kv_heads), (v, kv_heads)))
        hidden = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)[None] | ~real[:, None, :]  # [g, n, n]
        out = masked_attention(qg, kg, vg, hidden[:, None], scale).transpose(1, 2).reshape(g * n, h * d)
        keep = real.flatten().nonzero().flatten()
        outputs.append(out.index_select(0, keep))
        positions.append(index[keep])
    order = torch.argsort(torch.cat(positions))  # the spans cover every position once
    return torch.cat(outputs).index_select(0, order).view(b, length, h, d)


def packed_attention_forward(module, query, key, value, attention_mask=None, *, position_ids=None, scaling=None,
                             dropout: float = 0.0, kernel: str | None = None, **kwargs):
    """transformers attention interface: query [B, H, L, D], key/value [B, KV, L, D] ->
    ([B, L, H, D], None), causal attention within each sample's span. ``kernel``: "sdpa" or
    "math" (``causal_attention``, one span at a time) or "grouped" (``grouped_attention``);
    by default "sdpa" on a GPU and "grouped" on the CPU."""
    if position_ids is None:
        raise PackedAttentionError("packed attention needs the position ids (they mark where samples start)")
    if query.shape[2] != key.shape[2]:
        raise PackedAttentionError("packed attention is for training: queries and keys must be the same positions "
                                   "(no cache)")
    if dropout:
        raise PackedAttentionError("packed attention has no attention dropout")
    kernel = kernel or ("sdpa" if query.is_cuda else "grouped")
    if kernel == "grouped":
        return grouped_attention(query, key, value, span_bounds(position_ids), scaling), None
    rows = []
    # split, not slice: the backward of a split is one concatenation of the spans'
    # gradients, where each slice's backward would allocate a zero tensor of the whole row
    for spans, q, k, v in zip(span_bounds(position_ids), query.split(1), key.split(1), value.split(1)):
        sizes = [e - s for s, e in spans]
        parts = [causal_attention(qs, ks, vs, scaling, kernel)
                 for qs, ks, vs in zip(q.split(sizes, 2), k.split(sizes, 2), v.split(sizes, 2))]
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
for _kernel in KERNELS:
    AttentionInterface.register(f"{PACKED_ATTENTION}_{_kernel}", partial(packed_attention_forward, kernel=_kernel))


def use_packed_attention(model, enabled: bool = True, kernel: str | None = None) -> None:
    """Switch a QinYu model's backbone to (or back from) per-sample packed attention;
    ``kernel`` ("sdpa", "math" or "grouped") fixes the kernel instead of choosing it by device."""
    if kernel is not None and kernel not in KERNELS:
        raise PackedAttentionError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    name = PACKED_ATTENTION + (f"_{kernel}" if kernel else "")
    model.model.config._attn_implementation = name if enabled else model.config.attn_implementation
