# Benchmarks: throughput of one run per model and corpus (sdgm.harness.config.benchmarked_runs), generation of every
# trained run, the scaling of one mixing layer with L, and their tables/figures.
# A benchmark job claims every core Snakemake was given (threads: workflow.cores), so no other job runs beside
# it and disturbs its timings.


rule throughput:
    input:
        metrics=rules.train.output.metrics,
        run=rules.train.output.run,
        weights=rules.train.output.weights,
        vocab=rules.train.output.vocab,
    output:
        f"{OUT}/bench/throughput/{RUN}.json",
    log:
        f"{OUT}/logs/throughput/{RUN}.log",
    conda:
        "../envs/torch.yaml"
    threads: workflow.cores
    resources:
        **cluster_res("bench"),
    params:
        bench=config["benchmark"],
    script:
        "../scripts/throughput.py"


rule scaling:
    output:
        f"{OUT}/bench/scaling.json",
    log:
        f"{OUT}/logs/scaling.log",
    conda:
        "../envs/torch.yaml"
    threads: workflow.cores
    resources:
        **cluster_res("bench"),
    params:
        bench=config["benchmark"],
        train=config["train"],
    script:
        "../scripts/scaling.py"


rule bench_report:
    input:
        throughput=throughput_files,
        scaling=rules.scaling.output,
    output:
        tables=expand(
            "{out}/tables/{name}.{ext}",
            out=OUT,
            name=["throughput", "scaling", "scaling_slopes"],
            ext=["csv", "md", "tex"],
        ),
        figures=expand("{out}/figures/scaling.{ext}", out=OUT, ext=["png", "pdf"]),
    log:
        f"{OUT}/logs/bench_report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    script:
        "../scripts/bench_report.py"


rule generation:
    input:
        metrics=rules.train.output.metrics,
        run=rules.train.output.run,
        weights=rules.train.output.weights,
        vocab=rules.train.output.vocab,
    output:
        f"{OUT}/bench/generation/{RUN}.json",
    log:
        f"{OUT}/logs/generation/{RUN}.log",
    conda:
        "../envs/torch.yaml"
    threads: workflow.cores
    resources:
        **cluster_res("bench"),
    params:
        bench=config["benchmark"],
    script:
        "../scripts/generation.py"


rule generation_report:
    input:
        generation=generation_files,
    output:
        tables=expand("{out}/tables/generation.{ext}", out=OUT, ext=["csv", "md", "tex"]),
        figures=expand("{out}/figures/generation_latency.{ext}", out=OUT, ext=["png", "pdf"]),
    log:
        f"{OUT}/logs/generation_report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    script:
        "../scripts/generation_report.py"
