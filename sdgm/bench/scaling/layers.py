"""The token-mixing layers the scaling benchmark compares, each exactly as its baseline trains it, all with their
projections, and each with its least cost (cost(B, L, mode, bytes_per_value): FLOPs, sines, bytes): SDGM's encoder
+ spectral decoder per decoder implementation, GPT-2's causal attention (flash attention where the device has it)
and the causal Linformer attention."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...spectral.ops.dispatch import ALGORITHMS, rotation_status, spectral_cost, triton_status

SDGM_DECODERS = ("naive", "chunked", "rotation", "triton")


def _io_bytes(B: int, L: int, D: int, mode: str, bytes_per_value: int) -> int:
    """Least memory traffic of a layer (B, L, D) -> (B, L, D): input and output, and in backward their gradients
    and the input again."""
    return bytes_per_value * B * L * D * (2 if mode == "forward" else 5)


class CausalAttentionLayer(nn.Module):
    """GPT-2's attention layer, the one the GPT-2 baseline trains with (baselines.gpt2.GPT2Attention: QKV
    projection, causal scaled_dot_product_attention, output projection); `flash_only` pins SDPA's flash kernel."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int, flash_only: bool = False):
        super().__init__()
        from baselines.gpt2 import GPT2Attention

        self.d_model = d_model
        self.layer = GPT2Attention(d_model, n_heads, seq_len)
        self.flash_only = flash_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = contextlib.nullcontext()
        if self.flash_only:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            ctx = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
        with ctx:
            return self.layer(x)  # (B, L, D)

    def cost(self, B: int, L: int, mode: str, bytes_per_value: int) -> dict:
        D = self.d_model
        proj = 2 * B * L * D * 4 * D  # QKV and output projections
        attn = 2 * B * L * L * D  # QK^T and PV over the causal half: 2 x (2 L^2 D / 2)
        k = 1 if mode == "forward" else 3
        return {"flops": k * (proj + attn), "sines": 0, "bytes": _io_bytes(B, L, D, mode, bytes_per_value)}


class LinformerLayer(nn.Module):
    """The causal Linformer attention the Linformer baseline trains with (baselines.linformer
    .CausalLinformerAttention): exact attention inside blocks of b positions, and all earlier blocks seen through
    k projected key/value rows (a prefix sum of each block's projection), so O(L (k + b)) instead of O(L^2)."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int, k: int, block_size: int):
        super().__init__()
        from baselines.linformer import CausalLinformerAttention, LinformerConfig

        self.cfg = LinformerConfig(
            vocab_size=1,
            seq_len=seq_len,
            d_model=d_model,
            n_layer=1,
            n_head=n_heads,
            k=k,
            block_size=block_size,
            dropout=0.0,
        )
        self.layer = CausalLinformerAttention(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)  # (B, L, D)

    def cost(self, B: int, L: int, mode: str, bytes_per_value: int) -> dict:
        D, k, b = self.cfg.d_model, self.cfg.k, self.cfg.block_size
        # projections; each block's keys and values projected to k rows; every query against k + b keys and values
        fwd = 2 * B * L * D * 4 * D + 2 * 2 * B * L * k * D + 2 * 2 * B * L * (k + b) * D
        return {
            "flops": fwd * (1 if mode == "forward" else 3),
            "sines": 0,
            "bytes": _io_bytes(B, L, D, mode, bytes_per_value),
        }


class SDGMMixingLayer(nn.Module):
    """SDGM's token mixing with SDGM's own code: causal Conv1D encoder, then the spectral decoder (no embedding, no
    head), by the implementation `decoder` (sdgm/spectral/ops/dispatch.py)."""

    def __init__(self, d_model: int, n_atoms: int, seq_len: int, kernel_size: int, decoder: str = "auto"):
        super().__init__()
        from ...spectral.model import SDGM, SDGMConfig

        self.sdgm = SDGM(
            SDGMConfig(
                vocab_size=1,
                d_model=d_model,
                n_atoms=n_atoms,
                seq_len=seq_len,
                kernel_size=kernel_size,
                decoder=decoder,
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sdgm.decode(self.sdgm.encode(x))  # (B, L, D)

    def cost(self, B: int, L: int, mode: str, bytes_per_value: int) -> dict:
        cfg = self.sdgm.cfg
        D, K = cfg.d_model, cfg.n_atoms
        enc = 2 * B * L * cfg.kernel_size * D * K * (1 if mode == "forward" else 3)
        # the algorithm it runs
        dec = spectral_cost(B, L, K, D, mode, bytes_per_value, ALGORITHMS.get(cfg.decoder, "direct"))
        x_io = bytes_per_value * B * L * D * (1 if mode == "forward" else 2)  # the layer's input, and its gradient
        return {**dec, "flops": enc + dec["flops"], "bytes": dec["bytes"] + x_io}


def flash_attention_available(device: torch.device, dtype: torch.dtype | None) -> tuple[bool, str]:
    """Can scaled_dot_product_attention run its flash kernel here (causal, this device and dtype)?"""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 16, 32, device=device, dtype=dtype or torch.float32)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True, "flash"
    except Exception as e:  # "No available kernel" on devices/dtypes the flash kernel does not cover
        return False, f"default selection (flash unavailable: {str(e).splitlines()[0][:200]})"


def default_layers(
    d_model: int,
    n_atoms: int,
    kernel_size: int,
    n_heads: int,
    linformer_k: int,
    flash: bool,
    decoders=SDGM_DECODERS,
    linformer_block_size: int = 32,
) -> dict[str, Callable[[int], nn.Module]]:
    """name -> factory(L) of the layers compared: SDGM per decoder implementation, attention, Linformer."""
    layers: dict[str, Callable[[int], nn.Module]] = {}
    for dec in decoders:

        def sdgm(L, dec=dec):
            return SDGMMixingLayer(d_model, n_atoms, L, kernel_size, dec)

        sdgm.decoder = dec  # each entry of this layer records it (see spectral_decoder)
        layers[f"sdgm_{dec}"] = sdgm
    layers["attention"] = lambda L: CausalAttentionLayer(d_model, n_heads, L, flash_only=flash)
    layers["linformer"] = lambda L: LinformerLayer(d_model, n_heads, L, linformer_k, linformer_block_size)
    return layers


def spectral_decoder(factory) -> str | None:
    """The SDGM decoder implementation a layer factory times (its entries are compared with attention), or None."""
    return getattr(factory, "decoder", None)


def unavailable_layers(layers: dict, device: torch.device) -> dict[str, str]:
    """name -> why the layer is not measured on this device (the Triton decoder times only on CUDA, the rotation
    decoder only on a CPU)."""
    out = {}
    for name, factory in layers.items():
        decoder = spectral_decoder(factory)
        if decoder == "triton":
            ok, why = triton_status(device)
            if device.type != "cuda" or not ok:
                out[name] = (
                    why
                    if not ok and device.type == "cuda"
                    else (
                        "the Triton kernels are timed on CUDA devices only (on a CPU they run in Triton's interpreter, "
                        "which is for tests)"
                    )
                )
        elif decoder == "rotation":
            ok, why = rotation_status(device)
            if not ok:
                out[name] = why
    return out
