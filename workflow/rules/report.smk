rule report:
    input:
        metrics=metrics_files,
    output:
        tables=expand(
            "{out}/tables/{name}.{ext}",
            out=OUT,
            name=["main", "ablations", "reconstruction"],
            ext=["csv", "md", "tex"],
        ),
        figures=expand(
            "{out}/figures/{name}.{ext}",
            out=OUT,
            name=["training_curves", "ablations", "ppl_vs_atoms"],
            ext=["png", "pdf"],
        ),
    log:
        f"{OUT}/logs/report.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    params:
        ablations=ablations(config),  # which experiments are ablations of which main run (table layout only)
    script:
        "../scripts/report.py"
