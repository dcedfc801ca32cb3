"""Train one (corpus, experiment, seed), evaluate it, write its run directory and metrics.json (rule train).
With job_resources.train.processes > 1 the training runs in that many processes under torchrun
(sdgm.harness.distributed), all writing to this job's log.
A SIGTERM (a Slurm time limit or preemption) ends a one-process training with a checkpoint of the current step
and exit status 143 (sdgm.harness.checkpoint.Preempted); the job's next attempt resumes there."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.harness.distributed import launch
from sdgm.harness.experiment import run_training

smk = snakemake
setup(smk)
spec = smk.params.run["spec"]
kwargs = dict(
    tokens_dir=str(Path(smk.input[0]).parent),
    run_dir=str(Path(smk.output.metrics).parent),
    ckpt_dir=smk.params.ckpt_dir,
    metrics_path=smk.output.metrics,
    corpus=smk.wildcards.corpus,
    experiment=smk.wildcards.experiment,
    model_name=spec["model"],
    model_overrides=spec["model_overrides"],
    train_overrides=spec["train"],
    seed=spec["seed"],
    run_hash=smk.params.run["hash"],
    run_spec=spec,
    memory_check=smk.params.memory_check,
)
n = smk.params.processes
# the job's memory, shared by its training processes on one node (on a GPU each also checks its own GPU)
kwargs["mem_mb"] = smk.params.mem_mb // n if smk.params.mem_mb else None
if n > 1:
    launch(n, kwargs, threads=max(1, smk.threads // n), log_path=smk.log[0] if smk.log else None)
else:
    run_training(**kwargs)
