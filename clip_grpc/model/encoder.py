"""The forward pass: batches of pixels or token ids -> raw feature vectors (float32 numpy).

On CUDA a batch is written straight into a page-locked (pinned) host buffer, reused batch after
batch, and copied to the GPU without blocking; the features come back in one copy per batch.
Images travel to a GPU as uint8 and are normalised there (`takes_uint8`): a quarter of the bytes
to copy into the batch and over PCIe, and none of the float work on the CPUs that feed it. On
CPU the batch is a plain array of normalised pixels, as it always was. With `compile`, batches
pad up to the fixed batch sizes and text widths that were compiled and run at start
(clip_grpc/model/compiled.py).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import StartupError
from .compiled import (
    bucket_for,
    buckets_up_to,
    check_compile_possible,
    compile_forward,
    text_widths,
)
from .loading import LoadedModel

log = logging.getLogger(__name__)


def _features(output) -> torch.Tensor:
    # get_*_features returns a tensor in some transformers 5.x releases, an output object in others.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HostBuffers:
    """Host memory to build batches in, one buffer per input name, kept and reused (grown when a
    batch needs more), page-locked when the model is on CUDA.

    Reuse is safe: the model thread writes batch N+1 only after batch N's features were copied
    back, and on CUDA that copy waits for everything queued before it, batch N's upload included.
    """

    def __init__(self, pin_memory: bool):
        self.pin_memory = pin_memory
        self._kept: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A tensor of this shape to fill (through .numpy()); what it holds is undefined."""
        size = math.prod(shape)
        kept = self._kept.get(name)
        if kept is None or kept.numel() < size or kept.dtype != dtype:
            kept = torch.empty(size, dtype=dtype, pin_memory=self.pin_memory)
            self._kept[name] = kept
        return kept[:size].view(shape)


class Encoder:
    """Runs the model. Call it from one thread only: the server's dedicated model thread."""

    def __init__(self, loaded: LoadedModel, batch_limits: Mapping[str, int] | None = None,
                 compile: bool = False, takes_uint8: bool | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.dtype = loaded.dtype
        # Whether image batches come as uint8 pixels (ImageTransform.uint8), normalised here on
        # the model's device; by default on CUDA only. On CPU the normalising stays with the
        # preprocess threads, which run in parallel, not on the one model thread.
        self.takes_uint8 = self.takes_uint8_on(self.device) if takes_uint8 is None else (
            takes_uint8)
        # SigLIP's text tower pools the last position and was trained on max-length padding,
        # so its texts are always padded to the context; CLIP's causal tower pools the EOS token,
        # so padding to the longest text in the batch gives the same result, faster.
        self.pad_to_context = loaded.family == "siglip"
        # A tokenizer that pads on the left (as Gemma's may) moves the text to the end.
        self.pad_left = self.pad_to_context and loaded.padding_side == "left"
        self.on_cuda = self.device.type == "cuda"
        self.host = HostBuffers(pin_memory=self.on_cuda)
        self.buckets: dict[str, tuple[int, ...]] | None = None
        self.widths = (loaded.context_length,) if self.pad_to_context else (
            text_widths(loaded.context_length))
        self._image_forward = self.model.get_image_features
        self._text_forward = self.model.get_text_features
        if compile:
            if batch_limits is None:
                raise ValueError("compile needs the batch limits, to know its batch sizes")
            check_compile_possible(self.device)
            self.buckets = {m: buckets_up_to(n) for m, n in batch_limits.items()}
            self._image_forward = compile_forward(
                self.model.get_image_features, self.device, len(self.buckets["image"]))
            self._text_forward = compile_forward(
                self.model.get_text_features, self.device,
                len(self.buckets["text"]) * len(self.widths))

    @staticmethod
    def takes_uint8_on(device: torch.device) -> bool:
        """Whether images go to this device as uint8 by default: on CUDA only."""
        return device.type == "cuda"

    def _rows(self, modality: str, count: int) -> int:
        """Rows in the batch the model sees: count, or its bucket when compiled."""
        return count if self.buckets is None else bucket_for(count, self.buckets[modality])

    def _upload(self, host: torch.Tensor) -> torch.Tensor:
        return host.to(self.device, non_blocking=True) if self.on_cuda else host

    def _run(self, forward, count: int, **inputs) -> np.ndarray:
        if self.on_cuda and self.buckets is not None:
            torch.compiler.cudagraph_mark_step_begin()  # the last replay's outputs are copied
        with torch.inference_mode():
            features = _features(forward(**inputs))
        return features[:count].float().cpu().numpy()  # one copy back, padding rows left out

    def image_batch(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """The images in one host buffer, in one copy: uint8 pixels (takes_uint8) as they are,
        normalised on the device; normalised float32 pixels on CPU in the model's dtype (bf16 is
        converted as it is copied, not stacked in float32 and converted after), on CUDA in
        float32 (converted on the GPU, not by the CPU that feeds it)."""
        rows = self._rows("image", len(pixels))
        if self.takes_uint8:
            dtype = torch.uint8
        else:
            dtype = torch.float32 if self.on_cuda else self.dtype
        host = self.host.get("pixel_values", (rows, *pixels[0].shape), dtype)
        if dtype in (torch.uint8, torch.float32):
            np.stack(pixels, out=host.numpy()[:len(pixels)])
        else:  # numpy has no bfloat16: torch converts each image as it copies it in
            for row, image in zip(host, pixels, strict=False):
                row.copy_(torch.from_numpy(image))
        host[len(pixels):] = 0
        batch = self._upload(host)
        return self._normalised(batch) if self.takes_uint8 else batch.to(self.dtype)

    def _normalised(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, H, W) on the device -> (pixel * rescale - mean) / std in the model's
        dtype: the float32 operations ImageTransform.normalise does, one by one, so the same
        bits (IEEE float32 arithmetic, on a GPU as on a CPU)."""
        mean, std = self._mean_and_std
        batch = pixels.float()
        batch.mul_(self.loaded.image_transform.rescale_factor).sub_(mean).div_(std)
        return batch.to(self.dtype)

    @functools.cached_property
    def _mean_and_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalising constants on the device, moved there once, at the first batch."""
        transform = self.loaded.image_transform
        return (torch.from_numpy(transform.mean).to(self.device),
                torch.from_numpy(transform.std).to(self.device))

    def embed_images(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        return self._run(self._image_forward, len(pixels), pixel_values=self.image_batch(pixels))

    def text_batch(self, token_ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        count, rows = len(token_ids), self._rows("text", len(token_ids))
        longest = max(map(len, token_ids))
        if self.pad_to_context:
            width = self.loaded.context_length
        else:  # compiled: the width bucket, one of a known few shapes
            width = longest if self.buckets is None else bucket_for(longest, self.widths)
        ids = self.host.get("input_ids", (rows, width), torch.int64)
        ids_array = ids.numpy()
        # Every row's tokens in one flat array and one boolean mask: filling them in is one
        # numpy assignment (in row-major order, as the rows come), not a slice per text, which
        # matters on the one thread that feeds a GPU hundreds of texts per batch.
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=count)
        positions = np.arange(width)
        filled = (positions >= width - lengths[:, None]) if self.pad_left else (
            positions < lengths[:, None])
        ids_array[:count] = self.loaded.pad_token_id
        ids_array[:count][filled] = np.fromiter(
            itertools.chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum()))
        ids_array[count:] = ids_array[0]  # padding rows
        # No attention mask, for either family. SigLIP was trained without one. CLIP's tower is
        # causal and pools its EOS token, which sees no position after it, so masking the
        # padding after it changes no vector (the parity tests compare with the masked
        # forward); it only cost the model thread ~350 us a batch to build and apply, and on
        # a GPU it keeps attention on the causal kernels that need no mask.
        return {"input_ids": self._upload(ids)}

    def embed_texts(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        return self._run(self._text_forward, len(token_ids), **self.text_batch(token_ids))

    def pixels(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> its pixels in the form image batches take: uint8 (takes_uint8) or
        normalised float32 (ImageTransform)."""
        transform = self.loaded.image_transform
        return transform.uint8(image) if self.takes_uint8 else transform(image)

    def blank_image(self) -> np.ndarray:
        """Black pixels of the model's input size, in the form image batches take."""
        height, width = self.loaded.image_transform.output_hw
        return np.zeros((3, height, width), dtype=np.uint8 if self.takes_uint8 else np.float32)

    def warm_up(self) -> None:
        """Compile and run every shape now (at start, not on a caller's time); log how long."""
        if self.buckets is None:
            return
        shapes = {"image": [self.blank_image()],
                  "text": [[0] * tokens for tokens in self.widths]}
        for modality, run in (("image", self.embed_images), ("text", self.embed_texts)):
            started = time.perf_counter()
            try:
                for size in self.buckets[modality]:
                    for item in shapes[modality]:
                        run([item] * size)
            except Exception as error:  # torch raises many kinds; the server must say why
                raise StartupError(
                    f"--compile: torch.compile failed on the {modality} tower: {error}"
                ) from error
            log.info("compiled", extra={
                "modality": modality, "batch_sizes": list(self.buckets[modality]),
                **({"text_widths": list(self.widths)} if modality == "text" else {}),
                "compile_seconds": round(time.perf_counter() - started, 1)})
