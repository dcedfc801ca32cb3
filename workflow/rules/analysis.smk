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


# Free samples from the prompt of `sampling`, and continuations of prompts of the validation split
# (sampling.continuations) with their true continuations, for the generation-quality scores.
rule sample:
    input:
        run=rules.train.output,
        gmm=branch(has_gmm, then=rules.fit_gmm.output.gmm, otherwise=[]),
        tokens=rules.tokenize.output.tokens,
    output:
        text=f"{OUT}/samples/{RUN}.txt",
        continuations=f"{OUT}/samples/{RUN}.continuations.json",
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


# Every set of a run's samples scored without model weights (sdgm/reporting/sample_scores.py, docs/claims.md): reference
# perplexity under a Kneser-Ney trigram model of the training split, distinct-n, seq-rep-4, self-BLEU, Zipf, with
# bootstrap intervals, beside the same of the true continuations and of held-out text (the test split).
rule score_samples:
    input:
        samples=rules.sample.output.text,
        continuations=rules.sample.output.continuations,
        metrics=rules.train.output.metrics,
        train=f"{RES}/corpora/{{corpus}}/train.txt",
        heldout=f"{RES}/corpora/{{corpus}}/test.txt",
    output:
        f"{OUT}/quality/{RUN}.json",
    log:
        f"{OUT}/logs/score_samples/{RUN}.log",
    conda:
        "../envs/report.yaml"
    resources:
        **cluster_res("default"),
    script:
        "../scripts/score_samples.py"
