"""The benchmarks: what a performance engineer can check, each timed and measured the same way (sdgm.common.timing:
warmup, synchronized repeats, median; peak memory of one call; peak RSS). It imports the parts below it (common,
data, models, spectral, harness) and sdgm.reporting, whose tables its commands write; never sdgm.campaign.

nvml        NvmlSampler: GPU memory, power and energy from a background thread
throughput  train / score / generate tokens/s of a trained run, MFU, energy per token
generation  every decoding path of a run: tokens/s, prefill, latency per position, decoding-state bytes
scaling     one mixing layer against the sequence length, in two views, beside the hardware floor
untrained   training throughput of a freshly initialised model, per option variant (python -m sdgm.bench.untrained)
device      every benchmark that needs no trained model, on one device (python -m sdgm.bench.device): its command
            line; device_run the experiments measured and their records, device_probe the memory peaks
sass        the Triton kernels compiled for an H100 on any machine, their machine code read (python -m sdgm.bench.sass)
"""
