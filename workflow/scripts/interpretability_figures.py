"""The atoms and GMM figures of one SDGM run (rule interpretability_figures)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.common.preamble import setup  # noqa: E402
from sdgm.spectral.figures import run_figures  # noqa: E402

smk = snakemake  # noqa: F821
setup(smk)
written = run_figures(Path(smk.input.run[0]).parent, smk.input.gmm, smk.input.gmm_summary,
                      Path(smk.input.tokens[0]).parent, Path(smk.output.atoms).parent,
                      title=f"{smk.wildcards.corpus}/{Path(smk.input.run[0]).parent.name}",
                      seed=int(smk.wildcards.seed))
print(written)
