"""The harness that trains and evaluates every registered model the same way: the validated configuration and the
experiment matrix (config), the training recipe the benchmarks share (recipe), training with exact resume (train,
checkpoint), the memory estimate before the first step (memory), perplexity (evaluate), one run end to end (experiment), one run in several processes (distributed),
text generation (generate), one writer per run (runlock), where every number came from (provenance) and the
paper's readings measured on trained runs and architectures (readings). It imports
sdgm.common, sdgm.data, sdgm.models and sdgm.spectral (SDGM's GMM sampling, the decoder a record names); never the
benchmarks, the reporting or the published store.
"""
