"""The two input projectors: user-speech frames and speaker vectors into the LM.

Both are ``norm(in) -> Linear(in, H) -> GELU -> Linear(H, H)`` without biases, with the
reference's parameter names (``pre_proj_layernorm``, ``mlp.0``, ``mlp.2``).
"""

from __future__ import annotations

from torch import nn


class Projector(nn.Module):
    def __init__(self, in_size: int, hidden_size: int, norm_type: str = "layer_norm"):
        super().__init__()
        if norm_type == "layer_norm":
            self.pre_proj_layernorm = nn.LayerNorm(in_size, eps=1e-5)
        elif norm_type == "rms_norm":
            # eps=None as in the 4B reference: torch uses finfo(float32).eps, also for bf16
            self.pre_proj_layernorm = nn.RMSNorm(in_size, eps=None)
        else:
            raise ValueError(f"norm_type must be 'layer_norm' or 'rms_norm', got {norm_type!r}")
        self.mlp = nn.Sequential(
            nn.Linear(in_size, hidden_size, bias=False),
            nn.GELU(),  # exact erf GELU
            nn.Linear(hidden_size, hidden_size, bias=False),
        )

    def forward(self, x):
        return self.mlp(self.pre_proj_layernorm(x))
