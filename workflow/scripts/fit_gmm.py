"""Fit the Gaussian mixture over a trained SDGM's mixing vectors, components by BIC (rule fit_gmm)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.spectral.gmm import fit_run_gmm

smk = snakemake
setup(smk)
fit_run_gmm(
    Path(smk.input.run[0]).parent,
    Path(smk.input.tokens[0]).parent,
    smk.output.gmm,
    smk.output.summary,
    smk.params.gmm,
    seed=int(smk.wildcards.seed),
)
