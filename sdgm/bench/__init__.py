"""The benchmarks: what a performance engineer can check.

timing      time_calls (warmup, synchronized repeats, median), peak memory of one call, peak RSS
nvml        NvmlSampler: GPU memory, power and energy from a background thread
throughput  train / score / generate tokens/s of a trained run, MFU, energy per token
generation  every decoding path of a run: tokens/s, prefill, latency per position, decoding-state bytes
scaling     one mixing layer against the sequence length, in two views, beside the hardware floor
"""
