"""Held-out zero-shot accuracy of a CLIP model folder on the synthetic world.

    python -m demo.evaluate [--model DIR] [--count N]

Draws N fresh pictures with `world.EVAL_SEED` (never used in training) and classifies each by
the prompt whose embedding is nearest:
- colour x shape: one prompt per class, "a photo of a {colour} {shape}" (48 classes);
- all attributes: "a {size} {colour} {shape} {where}" (480 classes), scored per attribute.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

from demo import world
from demo.model_folder import DEMO_MODEL_DIR

FULL_TEMPLATE = "a {size} {colour} {shape} {where}"


def load_folder(folder: Path) -> tuple[CLIPModel, CLIPTokenizer, CLIPImageProcessor]:
    """Loads model, tokenizer and image processor from a local folder (float32, eval mode)."""
    model = CLIPModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer, processor


@torch.no_grad()
def _embed_texts(model, tokenizer, texts: list[str]) -> torch.Tensor:
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    return F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)


@torch.no_grad()
def _embed_images(model, processor, images: list[Image.Image]) -> torch.Tensor:
    features = []
    for start in range(0, len(images), 256):
        pixels = processor(images[start : start + 256], return_tensors="pt")["pixel_values"]
        features.append(model.get_image_features(pixel_values=pixels).pooler_output)
    return F.normalize(torch.cat(features), dim=-1)


def _full_classes() -> list[world.Scene]:
    return [
        world.Scene(shape=shape, colour=colour, size=size, position=position)
        for size, colour, shape, position in itertools.product(
            world.SIZES, world.COLOURS, world.SHAPES, world.POSITIONS
        )
    ]


def _full_prompt(scene: world.Scene) -> str:
    return world.with_article(
        FULL_TEMPLATE.format(
            size=scene.size,
            colour=scene.colour,
            shape=scene.shape,
            where=world.POSITIONS[scene.position][1],
        )
    )


def zero_shot_accuracy(
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    processor: CLIPImageProcessor,
    pictures: list[tuple[Image.Image, world.Scene]],
) -> dict[str, float]:
    """Top-1 accuracies (0..1) of zero-shot classification of `pictures`."""
    images = _embed_images(model, processor, [image for image, _ in pictures])
    scenes = [scene for _, scene in pictures]

    classes, prompts = world.class_prompts()
    guesses = (images @ _embed_texts(model, tokenizer, prompts).T).argmax(dim=1).tolist()
    guessed = [classes[g] for g in guesses]
    full_classes = _full_classes()
    full_prompts = [_full_prompt(scene) for scene in full_classes]
    full_guesses = (images @ _embed_texts(model, tokenizer, full_prompts).T).argmax(dim=1)
    full_guessed = [full_classes[g] for g in full_guesses.tolist()]

    def share(hits) -> float:
        return sum(hits) / len(scenes)

    return {
        "colour x shape": share(
            (s.colour, s.shape) == g for s, g in zip(scenes, guessed, strict=True)
        ),
        "colour": share(s.colour == g[0] for s, g in zip(scenes, guessed, strict=True)),
        "shape": share(s.shape == g[1] for s, g in zip(scenes, guessed, strict=True)),
        "all attributes": share(s == g for s, g in zip(scenes, full_guessed, strict=True)),
        "size": share(s.size == g.size for s, g in zip(scenes, full_guessed, strict=True)),
        "position": share(
            s.position == g.position for s, g in zip(scenes, full_guessed, strict=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print the accuracies as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer, processor = load_folder(args.model)
    accuracy = zero_shot_accuracy(model, tokenizer, processor, world.evaluation_set(args.count))
    if args.json:
        print(json.dumps(accuracy, indent=2))
        return
    print(f"held-out zero-shot top-1 on {args.count} pictures (seed {world.EVAL_SEED}):")
    for name, value in accuracy.items():
        print(f"  {name:<15} {100 * value:5.1f}%")


if __name__ == "__main__":
    main()
