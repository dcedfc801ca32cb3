"""Tables and the scaling figure from the benchmark records only (rule bench_report)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.bench_report import build_bench_report

smk = snakemake
setup(smk)
written = build_bench_report(
    smk.input.throughput, smk.input.scaling[0], Path(smk.output.tables[0]).parent, Path(smk.output.figures[0]).parent
)
print(written)
