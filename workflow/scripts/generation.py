"""Generation of one trained run: its own decoding (cache) beside the window recompute (rule generation)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.bench.generation import generation_for_run

smk = snakemake
setup(smk)
rec = generation_for_run(Path(smk.input.run).parent, smk.input.metrics, smk.output[0], smk.params.bench)
print({name: {b: g.get("tokens_per_s") for b, g in path["generate"].items()} for name, path in rec["paths"].items()})
