"""Draws the example pictures in `examples/` and their README (deterministic).

python -m demo.examples [--output DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from demo import world
from demo.model_folder import REPO_ROOT

EXAMPLES_SEED = 7
SIDE = 256

# (file name, what it shows)
EXAMPLES = (
    ("red_circle.png", world.Scene("circle", "red", "large", "middle")),
    ("blue_square.jpg", world.Scene("square", "blue", "small", "left")),
    ("green_triangle.png", world.Scene("triangle", "green", "large", "bottom")),
    ("yellow_star.jpg", world.Scene("star", "yellow", "small", "right")),
    ("purple_heart.png", world.Scene("heart", "purple", "small", "bottom")),
    ("orange_cross.jpg", world.Scene("cross", "orange", "large", "middle")),
)


def class_caption(scene: world.Scene) -> str:
    """The zero-shot prompt of the scene's colour x shape class."""
    return world.with_article(world.CLASS_TEMPLATE.format(colour=scene.colour, shape=scene.shape))


def full_caption(scene: world.Scene) -> str:
    where = world.POSITIONS[scene.position][1]
    return world.with_article(f"a {scene.size} {scene.colour} {scene.shape} {where}")


README = """# Example pictures

Drawn by `python -m demo.examples` from the synthetic world the demo model was trained on
(`demo/world.py`; {side}x{side} pixels, seed {seed}). Each picture's caption is the one the demo
model should rank first among the colour x shape prompts; the longer caption also names size and
position.

| file | caption | longer caption |
| --- | --- | --- |
{rows}
"""


def write_examples(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(EXAMPLES_SEED)
    written, rows = [], []
    for name, scene in EXAMPLES:
        image = world.draw(scene, rng, side=SIDE)
        path = folder / name
        if path.suffix == ".jpg":
            image.save(path, format="JPEG", quality=90)
        else:
            image.save(path, format="PNG")
        written.append(path)
        rows.append(f"| `{name}` | {class_caption(scene)} | {full_caption(scene)} |")
    (folder / "README.md").write_text(
        README.format(side=SIDE, seed=EXAMPLES_SEED, rows="\n".join(rows))
    )
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "examples")
    args = parser.parse_args()
    for path in write_examples(args.output):
        print(path)


if __name__ == "__main__":
    main()
