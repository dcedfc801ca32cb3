"""The paper's claims judged from the records, and the compact main table (rule claims)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.claims import build_claims

smk = snakemake
setup(smk)
written = build_claims(
    Path(smk.output.html).parent,
    metrics=smk.input.metrics,
    throughput=smk.input.throughput,
    generation=smk.input.generation,
    scaling=smk.input.scaling[0],
    gmm=smk.input.gmm,
    quality=smk.input.quality,
    claims_path=smk.input.claims,
)
print(written)
