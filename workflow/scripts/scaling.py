"""Time, peak memory and floor of one mixing layer (SDGM per decoder, causal attention, Linformer) against L (rule scaling)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.bench.scaling import scaling_from_config

smk = snakemake
setup(smk)
rec = scaling_from_config(smk.params.bench, smk.params.train, smk.output[0])
for view, models in rec["slopes"].items():
    print(f"slopes ({view}):", {m: {k: v["time"]["slope"] for k, v in modes.items()} for m, modes in models.items()})
