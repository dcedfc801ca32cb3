"""The generation table and latency figure from the generation records only (rule generation_report)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.generation_report import build_generation_report

smk = snakemake
setup(smk)
written = build_generation_report(
    smk.input.generation, Path(smk.output.tables[0]).parent, Path(smk.output.figures[0]).parent
)
print(written)
