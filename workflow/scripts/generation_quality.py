"""The generation-quality table and figure from the quality records only (rule generation_quality)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.quality_report import build_quality_report

smk = snakemake
setup(smk)
print(build_quality_report(smk.input.quality, Path(smk.output.tables[0]).parent, Path(smk.output.figures[0]).parent))
