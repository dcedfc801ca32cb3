"""Tables and figures from the runs' metrics.json files only (rule report)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting import build_report

smk = snakemake
setup(smk)
written = build_report(
    smk.input.metrics,
    Path(smk.output.tables[0]).parent,
    Path(smk.output.figures[0]).parent,
    ablations=smk.params.ablations,
)
print(written)
