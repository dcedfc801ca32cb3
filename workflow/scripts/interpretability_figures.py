"""The atoms and GMM figures of one SDGM run (rule interpretability_figures)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.spectral.figures import run_figures

smk = snakemake
setup(smk)
written = run_figures(
    Path(smk.input.run[0]).parent,
    smk.input.gmm,
    smk.input.gmm_summary,
    Path(smk.input.tokens[0]).parent,
    Path(smk.output.atoms).parent,
    title=f"{smk.wildcards.corpus}/{Path(smk.input.run[0]).parent.name}",
    seed=int(smk.wildcards.seed),
)
print(written)
