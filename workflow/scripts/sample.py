"""Generate text from a trained run: autoregressive, and from GMM-drawn coefficients if fitted (rule sample)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.generate import write_samples  # noqa: E402
from sdgm.snake import setup  # noqa: E402

smk = snakemake  # noqa: F821
setup(smk)
write_samples(Path(smk.input.run[0]).parent, smk.input.gmm or None, smk.output[0], **smk.params.sampling,
              seed=int(smk.wildcards.seed))
