"""A synthetic world of coloured shapes, drawn procedurally, with captions.

Every picture holds one shape with four attributes: its shape, colour, size and position. It
is drawn on a random low-saturation background (flat, gradient, blotches or stripes) with pixel
noise. Everything is deterministic given a `numpy.random.Generator`, so a seed fixes a data set.

    rng = np.random.default_rng(0)
    scene = random_scene(rng)
    image = draw(scene, rng)                # a PIL RGB image
    text, mentioned = describe(scene, rng)  # "a small red circle on the left", {...}

`evaluation_set()` draws the held-out images (a fixed seed never used in training) and
`class_prompts()` gives the zero-shot prompts, one per colour x shape class.
"""

from __future__ import annotations

import colorsys
import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross")

# Each colour is a range of (hue in degrees, saturation, value) the shape's fill is drawn from.
COLOURS = {
    "red": ((-8, 8), (0.75, 1.0), (0.7, 1.0)),
    "orange": ((22, 34), (0.8, 1.0), (0.85, 1.0)),
    "yellow": ((50, 60), (0.75, 1.0), (0.85, 1.0)),
    "green": ((100, 140), (0.6, 1.0), (0.5, 0.9)),
    "blue": ((210, 235), (0.7, 1.0), (0.6, 1.0)),
    "purple": ((270, 290), (0.55, 0.85), (0.5, 0.85)),
    "pink": ((320, 340), (0.35, 0.6), (0.9, 1.0)),
    "brown": ((20, 32), (0.6, 0.85), (0.35, 0.5)),
}

# Radius of the shape as a fraction of the picture's side.
SIZES = {"small": (0.14, 0.17), "large": (0.25, 0.3)}

# Centre of the shape (x, y) as fractions of the picture's side, and how captions say it.
POSITIONS = {
    "left": ((0.3, 0.5), "on the left"),
    "right": ((0.7, 0.5), "on the right"),
    "top": ((0.5, 0.3), "at the top"),
    "bottom": ((0.5, 0.7), "at the bottom"),
    "middle": ((0.5, 0.5), "in the middle"),
}

ATTRIBUTES = ("shape", "colour", "size", "position")
VALUES = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}

# The zero-shot prompt for a colour x shape class.
CLASS_TEMPLATE = "a photo of a {colour} {shape}"

# Seed of the held-out evaluation images; training never uses it.
EVAL_SEED = 20240917

# Caption templates and how often each is picked. Most name colour and shape; some name only a
# part, so that single words get meaning of their own.
TEMPLATES = (
    ("a photo of a {colour} {shape}", 4),
    ("a {colour} {shape}", 3),
    ("a picture of a {colour} {shape}", 1),
    ("a drawing of a {colour} {shape}", 1),
    ("a {shape} that is {colour}", 1),
    ("a {size} {colour} {shape}", 3),
    ("a photo of a {size} {colour} {shape}", 2),
    ("a {size} {shape} that is {colour}", 1),
    ("a {colour} {shape} {where}", 3),
    ("there is a {colour} {shape} {where}", 1),
    ("a {size} {colour} {shape} {where}", 4),
    ("a photo of a {size} {colour} {shape} {where}", 2),
    ("a {shape}", 1),
    ("a photo of a {shape}", 1),
    ("a {colour} shape", 1),
    ("something {colour}", 1),
    ("a {size} {shape}", 1),
    ("a {size} shape", 1),
    ("a {shape} {where}", 1),
    ("a shape {where}", 1),
)
_TEMPLATE_WEIGHTS = np.array([weight for _, weight in TEMPLATES], dtype=float)
_TEMPLATE_WEIGHTS /= _TEMPLATE_WEIGHTS.sum()
_PLACEHOLDER_ATTRIBUTE = {
    "{shape}": "shape",
    "{colour}": "colour",
    "{size}": "size",
    "{where}": "position",
}

# Canvas sides the pictures are drawn at; the model's preprocessing resizes them all.
CANVAS_SIDES = (64, 96, 128, 160, 224)


@dataclass(frozen=True)
class Scene:
    """What one picture shows."""

    shape: str
    colour: str
    size: str
    position: str

    def get(self, attribute: str) -> str:
        return getattr(self, attribute)


def random_scene(rng: np.random.Generator) -> Scene:
    """Draws the four attributes uniformly at random."""
    return Scene(**{a: VALUES[a][rng.integers(len(VALUES[a]))] for a in ATTRIBUTES})


def with_article(text: str) -> str:
    """Turns "a orange" into "an orange"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def describe(scene: Scene, rng: np.random.Generator) -> tuple[str, frozenset[str]]:
    """A caption of the scene from a random template, and the attributes it mentions."""
    template = TEMPLATES[rng.choice(len(TEMPLATES), p=_TEMPLATE_WEIGHTS)][0]
    mentioned = frozenset(a for p, a in _PLACEHOLDER_ATTRIBUTE.items() if p in template)
    text = template.format(
        shape=scene.shape,
        colour=scene.colour,
        size=scene.size,
        where=POSITIONS[scene.position][1],
    )
    return with_article(text), mentioned


def class_prompts(template: str = CLASS_TEMPLATE) -> tuple[list[tuple[str, str]], list[str]]:
    """The zero-shot classes (colour, shape) and one prompt for each, in the same order."""
    classes = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    prompts = [with_article(template.format(colour=c, shape=s)) for c, s in classes]
    return classes, prompts


def _hsv_colour(rng: np.random.Generator, hue, saturation, value) -> np.ndarray:
    h = (rng.uniform(*hue) % 360) / 360
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value)))


def _background_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv_colour(rng, (0, 360), (0.0, 0.15), (0.12, 0.95))


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A side x side x 3 float array in [0, 1]: flat, gradient, blotches or stripes."""
    first, second = _background_colour(rng), _background_colour(rng)
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(first, (side, side, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    angle = rng.uniform(0, 2 * math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == 1:
        mix = (along - along.min()) / (along.max() - along.min() + 1e-9)
    elif kind == 2:
        cells = rng.uniform(0, 1, (rng.integers(2, 6), rng.integers(2, 6)))
        coarse = Image.fromarray((cells * 255).astype(np.uint8))
        mix = np.asarray(coarse.resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
    else:
        period = rng.uniform(0.08, 0.25)
        mix = (np.floor(along / period) % 2).astype(np.float32)
    mix = mix[..., None]
    return (first * (1 - mix) + second * mix).astype(np.float32)


def _outline(shape: str) -> list[tuple[float, float]]:
    """The shape's polygon around (0, 0) with a radius of about 1 (y points down)."""

    def ring(count: int, radius: float, start_degrees: float) -> list[tuple[float, float]]:
        step = 2 * math.pi / count
        start = math.radians(start_degrees)
        return [
            (radius * math.cos(start + i * step), radius * math.sin(start + i * step))
            for i in range(count)
        ]

    if shape == "circle":
        return ring(48, 1.0, 0)
    if shape == "square":
        return ring(4, 1.25, 45)
    if shape == "triangle":
        return ring(3, 1.35, -90)
    if shape == "heart":
        # The classic heart curve, scaled to a radius of about 1.15 and centred.
        steps = [2 * math.pi * i / 64 for i in range(64)]
        return [
            (
                1.15 * 16 * math.sin(t) ** 3 / 16,
                -1.15
                * (
                    13 * math.cos(t)
                    - 5 * math.cos(2 * t)
                    - 2 * math.cos(3 * t)
                    - math.cos(4 * t)
                    + 2.5
                )
                / 16,
            )
            for t in steps
        ]
    if shape == "star":
        outer, inner = ring(5, 1.35, -90), ring(5, 0.55, -54)
        return [point for pair in zip(outer, inner, strict=True) for point in pair]
    if shape == "cross":
        w, e = 0.38, 1.15
        return [(-w, -e), (w, -e), (w, -w), (e, -w), (e, w), (w, w),
                (w, e), (-w, e), (-w, w), (-e, w), (-e, -w), (-w, -w)]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def draw(scene: Scene, rng: np.random.Generator, side: int | None = None) -> Image.Image:
    """Draws the scene as a square RGB picture (`side` pixels, random when None)."""
    if side is None:
        side = CANVAS_SIDES[rng.integers(len(CANVAS_SIDES))]
    background = _background(rng, side)
    fill = _hsv_colour(rng, *COLOURS[scene.colour])
    radius = rng.uniform(*SIZES[scene.size]) * side
    (cx, cy), _ = POSITIONS[scene.position]
    cx = (cx + rng.uniform(-0.04, 0.04)) * side
    cy = (cy + rng.uniform(-0.04, 0.04)) * side
    angle = math.radians(rng.uniform(-15, 15))
    cos, sin = math.cos(angle), math.sin(angle)
    polygon = [
        (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
        for x, y in _outline(scene.shape)
    ]

    image = Image.fromarray(np.round(background * 255).astype(np.uint8))
    ImageDraw.Draw(image).polygon(polygon, fill=tuple(int(round(c * 255)) for c in fill))
    noise = rng.standard_normal((side, side, 3), dtype=np.float32) * rng.uniform(0, 15)
    pixels = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.round(np.clip(pixels, 0, 255)).astype(np.uint8))


def evaluation_set(count: int, seed: int = EVAL_SEED) -> list[tuple[Image.Image, Scene]]:
    """`count` freshly drawn held-out pictures and what each shows (fixed seed)."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        scene = random_scene(rng)
        pictures.append((draw(scene, rng), scene))
    return pictures
