"""Score one run's samples without model weights: reference perplexity, distinct-n, seq-rep-4, self-BLEU, Zipf,
beside the true continuations and held-out text (rule score_samples)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.common.preamble import setup  # noqa: E402
from sdgm.reporting.sample_scores import score_run  # noqa: E402

smk = snakemake  # noqa: F821
setup(smk)
score_run(smk.input.samples, smk.input.continuations, smk.input.train, smk.input.heldout, smk.input.metrics,
          smk.output[0])
