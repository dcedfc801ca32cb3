"""Score one run's samples without model weights: reference perplexity, distinct-n, seq-rep-4, self-BLEU, Zipf,
beside the true continuations and held-out text (rule score_samples)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.sample_scores import score_run

smk = snakemake
setup(smk)
score_run(
    smk.input.samples, smk.input.continuations, smk.input.train, smk.input.heldout, smk.input.metrics, smk.output[0]
)
