"""How one token-mixing layer scales with the sequence length L, beside what the hardware must do at least.

    rates  = device_rates("cuda")                     # tensor-core FLOP/s, sines/s, bytes/s, measured once
    record = scaling_benchmark(lengths=[128, ..., 65536], tokens_per_batch=65536,
                               batch_lengths=[1024, ..., 1048576], batch_size=1)

Two views: "tokens" keeps B * L = tokens_per_batch (the training regime: B = tokens / L), "batch" keeps
B = batch_size and grows L (long-context inference and training). Layers: SDGM's encoder + spectral decoder in
each implementation of sdgm/spectral/ops/ (naive, chunked, triton), GPT-2's causal attention (flash
attention where the device has it) and the causal Linformer attention, each exactly as its baseline trains it, all
with their projections.

Every measured case carries its floor: the time the device needs at least for the case's arithmetic, from the
measured rates -- max(FLOPs / matmul rate, elementwise FLOPs / vector rate, sines / sine rate, bytes / bandwidth)
-- and measured / floor.
Log-log slopes of time per sequence and of peak memory against L are fitted per view, layer and mode.
Timing and memory follow sdgm.common.timing (warmup, synchronized repeats, median; allocator peak above the inputs).

The modules: layers (the layers compared and their costs), rates (the device's rates and a cost's floor), sine_rate
(the Triton kernel of the hardware sine's rate), fit (slopes and extrapolation), measure (the benchmark and its
record), cli (the command line).
"""

from .fit import extrapolate, fit_loglog_slope, predicted_peak
from .layers import (
    SDGM_DECODERS,
    CausalAttentionLayer,
    LinformerLayer,
    SDGMMixingLayer,
    default_layers,
    flash_attention_available,
    spectral_decoder,
    unavailable_layers,
)
from .measure import (
    BUDGET_SKIP,
    MODES,
    SCHEMA_VERSION,
    VIEWS,
    available_host_memory,
    scaling_benchmark,
    scaling_from_config,
)
from .rates import device_rates, floor_of

__all__ = [
    "BUDGET_SKIP",
    "MODES",
    "SCHEMA_VERSION",
    "SDGM_DECODERS",
    "VIEWS",
    "CausalAttentionLayer",
    "LinformerLayer",
    "SDGMMixingLayer",
    "available_host_memory",
    "default_layers",
    "device_rates",
    "extrapolate",
    "fit_loglog_slope",
    "flash_attention_available",
    "floor_of",
    "predicted_peak",
    "scaling_benchmark",
    "scaling_from_config",
    "spectral_decoder",
    "unavailable_layers",
]
