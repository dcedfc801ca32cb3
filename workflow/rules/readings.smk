# The readings of the paper (docs/readings.md): run by config/readings.yaml, whose `readings:` section makes the
# readings tables the default target (Snakefile). Every trained run gets its measurement readings (reconstruction
# cosines, further evaluations of its perplexity); the SDGM architecture readings are counted without training; the
# tables and the figure are rendered from these JSON records and the runs' metrics.json only.


rule reading_measures:
    input:
        run=rules.train.output,
        tokens=rules.tokenize.output.tokens,
    output:
        f"{OUT}/readings/{RUN}.json",
    log:
        f"{OUT}/logs/reading_measures/{RUN}.log",
    conda:
        "../envs/torch.yaml"
    threads: job_res("train", "threads")
    resources:
        **cluster_res("default"),
    params:
        evaluations=READINGS.get("evaluations", {}),
        seq_len=config["train"]["seq_len"],
    script:
        "../scripts/reading_measures.py"


rule parameter_readings:
    output:
        f"{OUT}/readings/parameters.json",
    log:
        f"{OUT}/logs/parameter_readings.log",
    conda:
        "../envs/torch.yaml"
    resources:
        **cluster_res("default"),
    params:
        grid=READINGS.get("parameters", {}),
        vocab_sizes={
            c: config["corpora"][c]["expected"]["vocab_size"]
            for c in READINGS.get("parameters", {}).get("corpora", [])
        },
        base=(
            experiment_spec(config, READINGS["default"])["model_overrides"] | {"seq_len": config["train"]["seq_len"]}
            if READINGS
            else {}
        ),
    script:
        "../scripts/parameter_readings.py"


rule readings_report:
    input:
        metrics=metrics_files,
        readings=readings_files,
        parameters=rules.parameter_readings.output,
    output:
        tables=expand(
            "{out}/tables/{name}.{ext}",
            out=OUT,
            name=["readings", "readings_parameters", "readings_cosine"],
            ext=["csv", "md", "tex"],
        ),
        figures=expand("{out}/figures/readings_curves.{ext}", out=OUT, ext=["png", "pdf"]),
    log:
        f"{OUT}/logs/readings_report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    params:
        default=READINGS.get("default"),
        reference=READINGS.get("reference"),
    script:
        "../scripts/readings_report.py"
