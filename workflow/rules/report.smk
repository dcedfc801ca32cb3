rule report:
    input:
        metrics=[f"{run_dir(r)}/metrics.json" for r in RUNS],
    output:
        tables=expand("{out}/tables/main.{ext}", out=OUT, ext=["csv", "md", "tex"]),
        figures=expand("{out}/figures/training_curves.{ext}", out=OUT, ext=["png", "pdf"]),
    log:
        f"{OUT}/logs/report.log",
    resources:
        **cluster_res("default"),
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
