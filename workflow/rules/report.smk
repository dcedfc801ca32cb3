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


# The generation-quality table and figure, from the quality records only (rule score_samples).
rule generation_quality:
    input:
        quality=quality_files,
    output:
        tables=expand("{out}/tables/generation_quality.{ext}", out=OUT, ext=["csv", "md", "tex"]),
        figures=expand("{out}/figures/generation_quality.{ext}", out=OUT, ext=["png", "pdf"]),
    log:
        f"{OUT}/logs/generation_quality.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    script:
        "../scripts/generation_quality.py"
