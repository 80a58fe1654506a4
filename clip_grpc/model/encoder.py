"""The forward pass: batches of pixels or token ids -> raw feature vectors (float32 numpy)."""

from __future__ import annotations

import numpy as np
import torch

from .loading import LoadedModel


def _features(output) -> torch.Tensor:
    # get_*_features returns a tensor in some transformers 5.x releases, an output object in others.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class Encoder:
    """Runs the model. Call it from one thread only: the server's dedicated model thread."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.dtype = loaded.dtype
        # SigLIP's text tower pools the last position and was trained on max-length padding,
        # so its texts are always padded to the context; CLIP's causal tower pools the EOS token,
        # so padding to the longest text in the batch gives the same result, faster.
        self.pad_to_context = loaded.family == "siglip"
        # A tokenizer that pads on the left (as Gemma's may) moves the text to the end.
        self.pad_left = self.pad_to_context and loaded.padding_side == "left"

    def embed_images(self, pixels: list[np.ndarray]) -> np.ndarray:
        batch = torch.from_numpy(np.stack(pixels))
        batch = batch.to(self.device, self.dtype, non_blocking=True)
        with torch.inference_mode():
            features = _features(self.model.get_image_features(pixel_values=batch))
        return features.float().cpu().numpy()

    def text_batch(self, token_ids: list[list[int]]) -> dict[str, torch.Tensor]:
        width = self.loaded.context_length if self.pad_to_context else max(map(len, token_ids))
        ids = np.full((len(token_ids), width), self.loaded.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, tokens in enumerate(token_ids):
            where = slice(width - len(tokens), width) if self.pad_left else slice(0, len(tokens))
            ids[row, where] = tokens
            mask[row, where] = 1
        batch = {"input_ids": torch.from_numpy(ids).to(self.device)}
        if not self.pad_to_context:
            batch["attention_mask"] = torch.from_numpy(mask).to(self.device)
        return batch

    def embed_texts(self, token_ids: list[list[int]]) -> np.ndarray:
        with torch.inference_mode():
            features = _features(self.model.get_text_features(**self.text_batch(token_ids)))
        return features.float().cpu().numpy()
