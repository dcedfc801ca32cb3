rule train:
    input:
        rules.tokenize.output,
    output:
        metrics=f"{OUT}/runs/{RUN}/metrics.json",
        run=f"{OUT}/runs/{RUN}/run.json",
        weights=f"{OUT}/runs/{RUN}/model.pt",
        vocab=f"{OUT}/runs/{RUN}/vocab.json",
    log:
        f"{OUT}/logs/train/{RUN}.log",
    conda:
        "../envs/torch.yaml"
    threads: job_res("train", "threads")
    resources:
        **cluster_res("train"),
    params:
        run=resolved_run,  # {"hash", "spec"}: refuses a {run_hash} that is not the current config's
        # not an output: Snakemake deletes the outputs of a failed job, and this is what a rerun resumes from
        ckpt_dir=lambda wc: f"{OUT}/checkpoints/{wc.corpus}/{wc.experiment}-s{wc.seed}-{wc.run_hash}",
        # more than 1: DistributedDataParallel under torchrun, the job's threads shared among the processes
        processes=train_processes(config),
        # the job's memory (what Slurm enforces), against which the training's estimated peak is checked first
        mem_mb=job_res("train", "mem_mb"),
        memory_check=job_res("train", "memory_check") is not False,
    script:
        "../scripts/train.py"
