"""The OpenAI CLIP checkpoint layout (also open_clip's standard ViT CLIP): what its state dict
says about the architecture, and its forward pass written in plain torch from its definition.

The image tower: `visual.conv1` (patch embedding, no bias), `visual.class_embedding` prepended,
`visual.positional_embedding` added, `visual.ln_pre`, residual blocks, `visual.ln_post` on the
class token, `@ visual.proj`. The text tower: `token_embedding` + `positional_embedding`, causal
blocks, `ln_final`, the end-of-text token (the highest id) pooled, `@ text_projection`.
A block is x + attn(ln_1(x)), then x + mlp(ln_2(x)); attention is torch's MultiheadAttention
(`in_proj_weight` holds q, k and v stacked, then `out_proj`); the MLP is c_fc, the activation,
c_proj. `clip-grpc convert` checks its HuggingFace folder against this forward before writing it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class Architecture:
    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp: int
    activation: str  # "quick_gelu" (OpenAI-trained) or "gelu"


def count_blocks(state: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for key in state if (m := pattern.match(key))})


def read_architecture(state: dict, activation: str, text_heads: int | None = None,
                      vision_head_width: int = 64) -> Architecture:
    """The sizes from the tensors' shapes; head counts are not in them: OpenAI's are
    width // 64, open_clip's come from its config."""
    patch = state["visual.conv1.weight"].shape[-1]
    grid = round(math.sqrt(state["visual.positional_embedding"].shape[0] - 1))
    vision_width = state["visual.conv1.weight"].shape[0]
    text_width = state["ln_final.weight"].shape[0]
    return Architecture(
        embed_dim=state["text_projection"].shape[1],
        image_size=grid * patch,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=count_blocks(state, "visual.transformer.resblocks."),
        vision_heads=vision_width // vision_head_width,
        vision_mlp=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_layers=count_blocks(state, "transformer.resblocks."),
        text_heads=text_heads or text_width // 64,
        text_mlp=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        activation=activation,
    )


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x)


def _layer_norm(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), state[name + ".weight"], state[name + ".bias"],
                        eps=LAYER_NORM_EPS)


def _attention(state: dict, prefix: str, x: torch.Tensor, heads: int,
               mask: torch.Tensor | None) -> torch.Tensor:
    batch, length, width = x.shape
    head_dim = width // heads
    qkv = F.linear(x, state[prefix + "in_proj_weight"], state[prefix + "in_proj_bias"])

    def per_head(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, length, heads, head_dim).transpose(1, 2)

    q, k, v = (per_head(t) for t in qkv.split(width, dim=-1))
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    if mask is not None:
        scores = scores + mask
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, width)
    return F.linear(out, state[prefix + "out_proj.weight"], state[prefix + "out_proj.bias"])


def _transformer(state: dict, prefix: str, x: torch.Tensor, layers: int, heads: int,
                 activation: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    for i in range(layers):
        block = f"{prefix}{i}."
        x = x + _attention(state, block + "attn.", _layer_norm(state, block + "ln_1", x),
                           heads, mask)
        h = _layer_norm(state, block + "ln_2", x)
        h = F.linear(h, state[block + "mlp.c_fc.weight"], state[block + "mlp.c_fc.bias"])
        h = _activation(activation, h)
        x = x + F.linear(h, state[block + "mlp.c_proj.weight"], state[block + "mlp.c_proj.bias"])
    return x


def encode_image(state: dict, arch: Architecture, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised pixels -> (B, embed_dim) image features."""
    x = F.conv2d(pixels, state["visual.conv1.weight"], stride=arch.patch_size)
    x = x.flatten(2).transpose(1, 2)  # (B, grid*grid, width)
    cls = state["visual.class_embedding"].reshape(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + state["visual.positional_embedding"]
    x = _layer_norm(state, "visual.ln_pre", x)
    x = _transformer(state, "visual.transformer.resblocks.", x, arch.vision_layers,
                     arch.vision_heads, arch.activation)
    return _layer_norm(state, "visual.ln_post", x[:, 0]) @ state["visual.proj"]


def encode_text(state: dict, arch: Architecture, token_ids: torch.Tensor) -> torch.Tensor:
    """(B, context_length) ids, zero-padded as OpenAI's tokenize() does -> (B, embed_dim)."""
    x = state["token_embedding.weight"][token_ids] + state["positional_embedding"]
    length = token_ids.shape[1]
    causal = torch.full((length, length), float("-inf"), dtype=x.dtype).triu(1)
    x = _transformer(state, "transformer.resblocks.", x, arch.text_layers, arch.text_heads,
                     arch.activation, causal)
    x = _layer_norm(state, "ln_final", x)
    pooled = x[torch.arange(x.shape[0]), token_ids.argmax(dim=-1)]  # end-of-text: highest id
    return pooled @ state["text_projection"]
