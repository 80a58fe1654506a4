"""Trains the demo CLIP from scratch on the synthetic world and saves it (`make demo-model`).

    python -m demo.train [--steps N] [--batch-size B] [--output DIR]

Deterministic: fixed seeds, fixed thread count, deterministic torch algorithms. The pictures are
drawn once into a pool and preprocessed by the same CLIPImageProcessor the folder ships, so the
model trains on exactly what the service feeds it; each step pairs pool pictures with freshly
drawn captions. Captions that name only some attributes match every picture in the batch that
has those attributes, so the contrastive targets spread over all true matches.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from demo import world
from demo.evaluate import zero_shot_accuracy
from demo.model_folder import (
    DEMO_MODEL_DIR,
    clip_config,
    image_processor,
    load_source_tokenizer,
    write_preprocessing_files,
)

TRAIN_SEED = 0
# Pictures for the progress log only; the reported accuracy uses world.EVAL_SEED.
VALIDATION_SEED = 1


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def draw_pool(count: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[world.Scene]]:
    """Draws `count` pictures; returns them resized and cropped (uint8, N x 3 x H x W)."""
    processor = image_processor()
    scenes, chunks = [], []
    for start in range(0, count, 1000):
        images = []
        for _ in range(min(1000, count - start)):
            scene = world.random_scene(rng)
            scenes.append(scene)
            images.append(world.draw(scene, rng))
        # Rescaling and normalising happen per batch in `normalise`, in the processor's arithmetic.
        pixels = processor(images, do_rescale=False, do_normalize=False, return_tensors="np")
        chunks.append(torch.from_numpy(pixels["pixel_values"].astype(np.uint8)))
    return torch.cat(chunks), scenes


def sincos_positions(grid: int, width: int) -> torch.Tensor:
    """2-D sine-cosine position embeddings for a ViT's class token (zeros) and grid x grid patches.

    Used to initialise the (still trained) vision position embeddings: with CLIP's default small
    random init the tower takes hundreds of steps to notice where anything is.
    """
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    frequencies = 1.0 / 10000 ** (torch.arange(width // 4) / (width // 4))
    angles = [axis.flatten().float()[:, None] * frequencies for axis in (x, y)]
    patches = torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1)
    return torch.cat([torch.zeros(1, width), patches])


def new_model() -> CLIPModel:
    model = CLIPModel(clip_config())
    vision = model.config.vision_config
    positions = model.vision_model.embeddings.position_embedding
    with torch.no_grad():
        positions.weight.copy_(
            sincos_positions(vision.image_size // vision.patch_size, vision.hidden_size)
        )
    return model


def normaliser():
    processor = image_processor()
    mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    scale = np.float32(processor.rescale_factor)
    return lambda pixels: (pixels.float() * scale - mean) / std


def match_matrix(scenes: list[world.Scene], mentions: list[frozenset[str]]) -> torch.Tensor:
    """matches[i, j] = 1 when caption j (of scene j, naming `mentions[j]`) is true of scene i."""
    values = torch.tensor(
        [[world.VALUES[a].index(s.get(a)) for a in world.ATTRIBUTES] for s in scenes]
    )
    named = torch.tensor([[a in m for a in world.ATTRIBUTES] for m in mentions])
    same = values[:, None, :] == values[None, :, :]  # [picture, caption, attribute]
    return (same | ~named[None, :, :]).all(dim=2).float()


def contrastive_loss(logits: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy against targets spread evenly over the true matches."""
    image_to_text = matches / matches.sum(dim=1, keepdim=True)
    text_to_image = matches.T / matches.T.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, image_to_text) + F.cross_entropy(logits.T, text_to_image)) / 2


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def train(args: argparse.Namespace) -> CLIPModel:
    seed_everything(TRAIN_SEED, args.threads)
    started = time.monotonic()
    rng = np.random.default_rng(TRAIN_SEED)
    pool, pool_scenes = draw_pool(args.pool_size, rng)
    print(f"drew {len(pool)} pictures in {time.monotonic() - started:.0f}s", flush=True)

    tokenizer = load_source_tokenizer()
    normalise = normaliser()
    validation = world.evaluation_set(args.validation_size, seed=VALIDATION_SEED)
    model = new_model()
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {parameters / 1e6:.2f}M parameters", flush=True)

    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        indices = rng.choice(len(pool), size=args.batch_size, replace=False)
        scenes = [pool_scenes[i] for i in indices]
        captions = [world.describe(scene, rng) for scene in scenes]
        tokens = tokenizer([text for text, _ in captions], padding=True, return_tensors="pt")

        image_features = model.get_image_features(pixel_values=normalise(pool[indices]))
        text_features = model.get_text_features(**tokens)
        image_features = F.normalize(image_features.pooler_output, dim=-1)
        text_features = F.normalize(text_features.pooler_output, dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        loss = contrastive_loss(logits, match_matrix(scenes, [m for _, m in captions]))

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            model.eval()
            accuracy = zero_shot_accuracy(model, tokenizer, image_processor(), validation)
            model.train()
            scores = " ".join(f"{name} {value:.2f}" for name, value in accuracy.items())
            print(
                f"step {step + 1}/{args.steps} loss {loss.item():.3f} "
                f"validation: {scores} ({time.monotonic() - started:.0f}s)",
                flush=True,
            )
    # CPU time is the figure to compare across runs on a shared machine.
    print(
        f"trained in {time.monotonic() - started:.0f}s wall clock, "
        f"{time.process_time():.0f}s CPU time ({args.threads} threads)",
        flush=True,
    )
    return model.eval()


def save(model: CLIPModel, folder: Path) -> None:
    """Saves weights (float16, to keep the folder small), config and preprocessing files."""
    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(folder)
    write_preprocessing_files(folder)
    for path in folder.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the files ship to other users (Docker)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    print(f"saved to {folder} ({size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pool-size", type=int, default=25000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--validation-size", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--output", type=Path, default=DEMO_MODEL_DIR)
    args = parser.parse_args()
    save(train(args), args.output)


if __name__ == "__main__":
    main()
