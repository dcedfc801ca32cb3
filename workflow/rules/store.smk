# The published store (sdgm/campaign/store.py): each finished run's weight-free files, copied into
# {results_dir}/published/<device>/runs/<corpus>/<experiment>-s<seed>/ with a manifest. The campaign
# (sdgm/campaign/waves.py) asks for these receipts in priority order; `snakemake --cores all` does not.


rule store_run:
    input:
        unpack(store_run_inputs),
    output:
        f"{OUT}/published/receipts/{RUN}.json",
    log:
        f"{OUT}/logs/store_run/{RUN}.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    params:
        # the store: {OUT}/published, above receipts/{corpus}/
        store=lambda wildcards, output: str(Path(output[0]).parents[2]),
        run=resolved_run,
        config=config,
    script:
        "../scripts/store_run.py"
