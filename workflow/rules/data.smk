rule fetch_corpus:
    output:
        expand("{res}/corpora/{{corpus}}/{split}.txt", res=RES, split=SPLITS),
    log:
        f"{OUT}/logs/fetch_corpus/{{corpus}}.log",
    conda:
        "../envs/data.yaml"
    resources:
        **cluster_res("default"),
    params:
        corpus=lambda wc: config["corpora"][wc.corpus],
    script:
        "../scripts/fetch_corpus.py"


rule tokenize:
    input:
        rules.fetch_corpus.output,
    output:
        tokens=expand("{res}/tokens/{{corpus}}/{split}.pt", res=RES, split=SPLITS),
        vocab=f"{RES}/tokens/{{corpus}}/vocab.json",
        stats=f"{RES}/tokens/{{corpus}}/stats.json",
    log:
        f"{OUT}/logs/tokenize/{{corpus}}.log",
    conda:
        "../envs/data.yaml"
    resources:
        **cluster_res("default"),
    params:
        expected=lambda wc: config["corpora"][wc.corpus].get("expected", {}),
    script:
        "../scripts/tokenize.py"
