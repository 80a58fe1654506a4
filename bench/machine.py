"""What the benchmark ran on, so numbers are never read without their machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def device_name(device: str) -> str:
    """What the model runs on, in words: the GPU's name for CUDA, else the CPU's."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return cpu_model()


def describe() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
    }


def one_line(machine: dict) -> str:
    load = machine.get("load_average_at_start")
    load_text = f", load {load[0]:.2f}" if load else ""
    gpu = machine.get("gpu") or "no GPU"
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {gpu}, torch {machine['torch']}"
        f"{load_text}"
    )
