"""Training, scoring and generation tokens/s, MFU, memory and energy of one trained run (rule throughput)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.bench.throughput import throughput_for_run

smk = snakemake
setup(smk)
rec = throughput_for_run(Path(smk.input.run).parent, smk.input.metrics, smk.output[0], smk.params.bench)
print({k: v for k, v in rec["metrics"].items()}, rec["na"])
