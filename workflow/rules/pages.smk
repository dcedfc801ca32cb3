# What a reader looks at: the interpretability figures of every SDGM run with a GMM, the collected text samples,
# HTML renderings of the tables, and results/README.md. Outputs marked report(...) go into
# `snakemake --report results/report.html`, each with its caption from workflow/report/.

# every table the report, bench_report and generation_report rules write, by name (their CSV is the source of the
# HTML page)
TABLES = [
    Path(f).stem
    for f in [
        *rules.report.output.tables,
        *rules.bench_report.output.tables,
        *rules.generation_report.output.tables,
        *rules.generation_quality.output.tables,
    ]
    if f.endswith(".csv")
]
FIG = f"{OUT}/figures/{RUN}"  # one run's figures: figures/{corpus}/{experiment}-s{seed}-{run_hash}


rule interpretability_figures:
    input:
        run=rules.train.output,
        gmm=rules.fit_gmm.output.gmm,
        gmm_summary=rules.fit_gmm.output.summary,
        tokens=rules.tokenize.output,
    output:
        # the PNGs go into the HTML report, by corpus; the PDFs are for print
        atoms=report(
            f"{FIG}/atoms.png",
            caption="../report/atoms.rst",
            category="Interpretability",
            subcategory="{corpus}",
            labels={"run": "{experiment}-s{seed}-{run_hash}", "figure": "atoms"},
        ),
        atom_signals=report(
            f"{FIG}/atom_signals.png",
            caption="../report/atom_signals.rst",
            category="Interpretability",
            subcategory="{corpus}",
            labels={"run": "{experiment}-s{seed}-{run_hash}", "figure": "atom_signals"},
        ),
        gmm_bic=report(
            f"{FIG}/gmm_bic.png",
            caption="../report/gmm_bic.rst",
            category="Interpretability",
            subcategory="{corpus}",
            labels={"run": "{experiment}-s{seed}-{run_hash}", "figure": "gmm_bic"},
        ),
        gmm_pca=report(
            f"{FIG}/gmm_pca.png",
            caption="../report/gmm_pca.rst",
            category="Interpretability",
            subcategory="{corpus}",
            labels={"run": "{experiment}-s{seed}-{run_hash}", "figure": "gmm_pca"},
        ),
        pdf=[f"{FIG}/{name}.pdf" for name in RUN_FIGURES],
    log:
        f"{OUT}/logs/interpretability_figures/{RUN}.log",
    conda:
        "../envs/torch.yaml"
    resources:
        **cluster_res("default"),
    script:
        "../scripts/interpretability_figures.py"


rule samples_table:
    input:
        samples=sample_files,
        metrics=metrics_files,
    output:
        md=f"{OUT}/tables/samples.md",
        html=report(f"{OUT}/tables/samples.html", caption="../report/samples.rst", category="Tables"),
    log:
        f"{OUT}/logs/samples_table.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    params:
        n_tokens=config["sampling"]["n_tokens"],
    script:
        "../scripts/samples_table.py"


rule table_html:
    input:
        f"{OUT}/tables/{{table}}.csv",
    output:
        report(f"{OUT}/tables/{{table}}.html", caption="../report/table.rst", category="Tables"),
    log:
        f"{OUT}/logs/table_html/{{table}}.log",
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    script:
        "../scripts/table_html.py"


# The figures of rules report, bench_report and generation_report are marked for the HTML report here, where
# they are read.
rule results_readme:
    input:
        main=f"{OUT}/tables/main.md",
        tables=[f"{OUT}/tables/{t}.md" for t in TABLES] + [rules.samples_table.output.md],
        figures=[
            report(f"{OUT}/figures/training_curves.png", caption="../report/training_curves.rst", category="Figures"),
            report(f"{OUT}/figures/ablations.png", caption="../report/ablations.rst", category="Figures"),
            report(f"{OUT}/figures/ppl_vs_atoms.png", caption="../report/ppl_vs_atoms.rst", category="Figures"),
            report(f"{OUT}/figures/scaling.png", caption="../report/scaling.rst", category="Figures"),
            report(
                f"{OUT}/figures/generation_latency.png", caption="../report/generation_latency.rst", category="Figures"
            ),
            report(
                f"{OUT}/figures/generation_quality.png", caption="../report/generation_quality.rst", category="Figures"
            ),
        ],
        run_figures=run_figure_files,
        html=[f"{OUT}/tables/{t}.html" for t in TABLES],
        metrics=metrics_files,
        gmm=gmm_files,
        claims=f"{OUT}/tables/claims.md",
        compact=f"{OUT}/tables/compact.md",
    output:
        f"{OUT}/README.md",
    log:
        f"{OUT}/logs/results_readme.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    params:
        summary={
            "experiments": list(config["experiments"]),
            "corpora": sorted({r.corpus for r in RUNS}),
            "seeds": config["seeds"],
            "seq_len": config["train"]["seq_len"],
        },
        run_figures=[(r.corpus, r.name) for r in GMM_RUNS],
    script:
        "../scripts/results_readme.py"


# The paper's claims judged from every record (sdgm/reporting/claims.yaml, docs/claims.md), and the compact main table
# in the paper's shape. Its HTML page leads the report (category "Claims").
rule claims:
    input:
        metrics=metrics_files,
        throughput=throughput_files,
        generation=generation_files,
        scaling=rules.scaling.output,
        gmm=gmm_files,
        quality=quality_files,
        claims=str(REPO / "sdgm" / "reporting" / "claims.yaml"),
    output:
        tables=expand("{out}/tables/{name}.{ext}", out=OUT, name=["claims", "compact"], ext=["csv", "md", "tex"]),
        html=report(f"{OUT}/tables/claims.html", caption="../report/claims.rst", category="Claims"),
        compact_html=report(f"{OUT}/tables/compact.html", caption="../report/claims.rst", category="Claims"),
    log:
        f"{OUT}/logs/claims.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    script:
        "../scripts/claims.py"
