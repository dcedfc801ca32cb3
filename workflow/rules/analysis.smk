rule fit_gmm:
    input:
        run=rules.train.output,
        tokens=rules.tokenize.output,
    output:
        gmm=f"{OUT}/runs/{RUN}/gmm.npz",
        summary=f"{OUT}/runs/{RUN}/gmm.json",
    log:
        f"{OUT}/logs/fit_gmm/{RUN}.log",
    conda:
        "../envs/torch.yaml"
    threads: job_res("default", "threads")
    resources:
        **cluster_res("default"),
    params:
        gmm=config["gmm"],
    script:
        "../scripts/fit_gmm.py"


rule sample:
    input:
        run=rules.train.output,
        gmm=branch(has_gmm, then=rules.fit_gmm.output.gmm, otherwise=[]),
    output:
        f"{OUT}/samples/{RUN}.txt",
    log:
        f"{OUT}/logs/sample/{RUN}.log",
    conda:
        "../envs/torch.yaml"
    resources:
        **cluster_res("default"),
    params:
        sampling=config["sampling"],
    script:
        "../scripts/sample.py"
