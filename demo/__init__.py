"""The demo model: a small CLIP trained on a synthetic world of coloured shapes.

- `demo.world` draws the images and captions (deterministic given a seed).
- `python -m demo.train` trains the model and saves it to `clip_grpc/demo_model/`.
- `python -m demo.evaluate` measures its held-out zero-shot accuracy.
- `python -m demo.examples` draws the images in `examples/`.
"""
