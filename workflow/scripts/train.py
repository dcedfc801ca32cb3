"""Train one (corpus, experiment, seed), evaluate it, write its run directory and metrics.json (rule train)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.experiment import run_training  # noqa: E402
from sdgm.snake import setup  # noqa: E402

smk = snakemake  # noqa: F821
setup(smk)
spec = smk.params.run["spec"]
run_training(
    Path(smk.input[0]).parent, Path(smk.output.metrics).parent, smk.params.ckpt_dir, smk.output.metrics,
    corpus=smk.wildcards.corpus, experiment=smk.wildcards.experiment, model=spec["model"],
    model_overrides=spec["model_overrides"], train_overrides=spec["train"], seed=spec["seed"],
    run_hash=smk.params.run["hash"], run_spec=spec,
)
