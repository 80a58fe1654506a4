"""The 0-100 CLIP score, shared by the server's Rank and the REST bridge (imports no torch)."""

from __future__ import annotations

import math


def clip_score(cosine: float) -> int:
    """round(100 * max(cosine, 0)), the torchmetrics CLIPScore convention; NaN scores 0."""
    if math.isnan(cosine):
        return 0
    return min(100, round(100 * max(cosine, 0.0)))
