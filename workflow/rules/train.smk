rule train:
    input:
        rules.tokenize.output,
    output:
        metrics=f"{OUT}/runs/{{corpus}}/{{experiment}}-s{{seed}}/metrics.json",
        run=f"{OUT}/runs/{{corpus}}/{{experiment}}-s{{seed}}/run.json",
        weights=f"{OUT}/runs/{{corpus}}/{{experiment}}-s{{seed}}/model.pt",
        vocab=f"{OUT}/runs/{{corpus}}/{{experiment}}-s{{seed}}/vocab.json",
    log:
        f"{OUT}/logs/train/{{corpus}}/{{experiment}}-s{{seed}}.log",
    params:
        spec=lambda wc: experiment_spec(config, wc.experiment),
        # not an output: Snakemake deletes the outputs of a failed job, and this is what a rerun resumes from
        ckpt_dir=lambda wc: f"{OUT}/checkpoints/{wc.corpus}/{wc.experiment}-s{wc.seed}",
        # more than 1: DistributedDataParallel under torchrun, the job's threads shared among the processes
        processes=train_processes(config),
    threads: job_res("train", "threads")
    resources:
        **cluster_res("train"),
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/train.py"
