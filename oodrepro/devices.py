"""Where and how a network runs: the device, bf16 autocast and the memory layout.

Precision and layout are chosen per device so that one config trains the same way on every
CPU (float32, contiguous where oneDNN's channels-last kernels are unsafe) and fast on CUDA.
"""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_bf16(setting, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: `auto` on CUDA only. On a CPU, bf16 runs on
    whatever kernels the ISA has (AMX, AVX512-BF16, or emulated), so one config would train
    differently on different CPUs (a toy problem reached 65 % with AMX, 100 % in float32);
    float32 everywhere costs the default run's training about 1.4× (README, bench/bf16.py).
    `true` / `false` force it (false: float32 throughout)."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cuda"


# oneDNN's channels-last convolution backward on AVX512 CPUs corrupted the heap ("double free")
# for convolutions of 4-12 channels at odd batch sizes; from 16 channels on it is safe and faster.
# Still so on torch 2.14 under ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16; forward passes without
# gradients are unaffected and run channels-last everywhere (inference.FORWARD_LAYOUT).
CHANNELS_LAST_MIN_CHANNELS = 16


def use_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """Channels-last layout on CUDA, and on a CPU for networks whose every convolution has at
    least CHANNELS_LAST_MIN_CHANNELS input and output channels (1.3× faster there in float32)."""
    if device.type == "cuda":
        return True
    wide = CHANNELS_LAST_MIN_CHANNELS
    return all(
        m.out_channels >= wide and (m.in_channels >= wide or m.in_channels == 3)  # 3: the RGB stem
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    )


def place_for_training(model: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """Move `model` to `device` in the layout its passes with gradients run in there
    (`use_channels_last`), the set-up every trainer shares; returns it for the batches."""
    layout = torch.channels_last if use_channels_last(model, device) else torch.contiguous_format
    model.to(device=device, memory_format=layout)
    return layout


def bf16_autocast(setting, device: torch.device) -> torch.autocast:
    """The autocast context of every training pass: bf16 where `use_bf16` says, else a no-op."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16(setting, device)
    )
