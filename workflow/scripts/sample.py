"""Generate text from a trained run: free samples (autoregressive, and from GMM-drawn coefficients if fitted), and
continuations of prompts of the validation split (rule sample)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.harness.generate import write_continuations, write_samples

smk = snakemake
setup(smk)
sampling = dict(smk.params.sampling)
continuations = sampling.pop("continuations")
run, gmm, seed = Path(smk.input.run[0]).parent, smk.input.gmm or None, int(smk.wildcards.seed)
write_samples(run, gmm, smk.output.text, **sampling, seed=seed)
write_continuations(
    run,
    gmm,
    Path(smk.input.tokens[0]).parent,
    smk.output.continuations,
    **continuations,
    temperature=sampling.get("temperature", 1.0),
    top_k=sampling.get("top_k", 0),
    seed=seed,
)
