# The published store (sdgm/store.py): each finished run's weight-free files, copied into
# {results_dir}/published/<device>/runs/<corpus>/<experiment>-s<seed>/ with a manifest. The campaign
# (sdgm/campaign.py) asks for these receipts in priority order; `snakemake --cores all` does not.


def publish_inputs(wildcards):
    name = f"{wildcards.corpus}/{wildcards.experiment}-s{wildcards.seed}-{wildcards.cfg}"
    run = f"{OUT}/runs/{name}"
    files = {"metrics": f"{run}/metrics.json", "samples": f"{OUT}/samples/{name}.txt"}
    if has_gmm(wildcards):
        files["gmm"] = f"{run}/gmm.json"
        files["figures"] = [f"{OUT}/figures/{name}/{f}.png" for f in RUN_FIGURES]
    if is_benchmarked(wildcards):
        files["throughput"] = f"{OUT}/bench/throughput/{name}.json"
    return files


rule publish:
    input:
        unpack(publish_inputs),
    output:
        f"{OUT}/published/receipts/{RUN}.json",
    log:
        f"{OUT}/logs/publish/{RUN}.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    params:
        store=f"{OUT}/published",
        run=resolved_run,
        config=config,
    script:
        "../scripts/publish_run.py"
