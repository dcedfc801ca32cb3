rule report:
    input:
        metrics=[f"{run_dir(r)}/metrics.json" for r in RUNS],
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
    params:
        ablations=ablations(config),  # which experiments are ablations of which main run (table layout only)
    resources:
        **cluster_res("default"),
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
