"""Small random CLIP checkpoints in the layouts users bring: OpenAI's .pt (TorchScript archive or
plain state dict) and open_clip's folder (open_clip_config.json + .bin or .safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB_SIZE = 49408


def openai_state_dict(*, embed_dim=16, image_size=32, patch_size=8, vision_width=64,
                      vision_layers=2, text_width=64, text_layers=2, context_length=77,
                      vision_mlp=None, text_mlp=None, seed=0) -> dict[str, torch.Tensor]:
    """Random weights with OpenAI CLIP's key names and shapes (weights near unit scale, so
    every layer matters to the output)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=None):
        scale = shape[-1] ** -0.5 if scale is None else scale
        return torch.randn(*shape, generator=generator) * scale

    def norm(prefix, width):
        return {prefix + ".weight": 1 + rand(width, scale=0.1),
                prefix + ".bias": rand(width, scale=0.1)}

    def blocks(prefix, width, layers, mlp):
        state = {}
        for i in range(layers):
            b = f"{prefix}{i}."
            state |= {b + "attn.in_proj_weight": rand(3 * width, width),
                      b + "attn.in_proj_bias": rand(3 * width, scale=0.1),
                      b + "attn.out_proj.weight": rand(width, width),
                      b + "attn.out_proj.bias": rand(width, scale=0.1),
                      b + "mlp.c_fc.weight": rand(mlp, width),
                      b + "mlp.c_fc.bias": rand(mlp, scale=0.1),
                      b + "mlp.c_proj.weight": rand(width, mlp),
                      b + "mlp.c_proj.bias": rand(width, scale=0.1)}
            state |= norm(b + "ln_1", width) | norm(b + "ln_2", width)
        return state

    grid = image_size // patch_size
    state = {
        "visual.conv1.weight": rand(vision_width, 3, patch_size, patch_size,
                                    scale=(3 * patch_size**2) ** -0.5),
        "visual.class_embedding": rand(vision_width, scale=1.0),
        "visual.positional_embedding": rand(grid * grid + 1, vision_width, scale=1.0),
        "visual.proj": rand(vision_width, embed_dim),
        "token_embedding.weight": rand(VOCAB_SIZE, text_width, scale=1.0),
        "positional_embedding": rand(context_length, text_width, scale=1.0),
        "text_projection": rand(text_width, embed_dim),
        "logit_scale": torch.tensor(4.6052),
    }
    state |= norm("visual.ln_pre", vision_width) | norm("visual.ln_post", vision_width)
    state |= norm("ln_final", text_width)
    state |= blocks("visual.transformer.resblocks.", vision_width, vision_layers,
                    vision_mlp or 4 * vision_width)
    state |= blocks("transformer.resblocks.", text_width, text_layers, text_mlp or 4 * text_width)
    return state


class _Holder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_openai_torchscript(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A TorchScript archive holding `state` in fp16 under the same names, plus the three size
    entries OpenAI's archives carry, as OpenAI's ViT-B-32.pt is laid out."""
    root = _Holder()
    extras = {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
              "vocab_size": torch.tensor(VOCAB_SIZE)}
    for key, value in {**state, **extras}.items():
        *path_parts, leaf = key.split(".")
        module = root
        for part in path_parts:
            if not hasattr(module, part):
                module.add_module(part, _Holder())
            module = getattr(module, part)
        if value.is_floating_point():
            module.register_parameter(leaf, torch.nn.Parameter(value.half(), requires_grad=False))
        else:
            module.register_buffer(leaf, value)
    torch.jit.save(torch.jit.script(root), str(path))
    return path


def save_openai_state_dict(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save(state, path)
    return path


def save_open_clip(folder: Path, state: dict[str, torch.Tensor], *, quick_gelu: bool | None,
                   text_heads=4, vision_head_width=16, safetensors=False,
                   preprocess: dict | None = None) -> Path:
    """A folder as open_clip's hub models are: open_clip_config.json + weights."""
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": state["text_projection"].shape[1],
        "vision_cfg": {"image_size": 32, "layers": 2, "patch_size": 8,
                       "width": state["visual.conv1.weight"].shape[0],
                       "head_width": vision_head_width},
        "text_cfg": {"context_length": state["positional_embedding"].shape[0],
                     "vocab_size": VOCAB_SIZE, "width": state["ln_final.weight"].shape[0],
                     "heads": text_heads, "layers": 2},
    }
    if quick_gelu is not None:
        model_cfg["quick_gelu"] = quick_gelu
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess or {
        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()},
                  folder / "open_clip_model.safetensors")
    else:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    return folder
