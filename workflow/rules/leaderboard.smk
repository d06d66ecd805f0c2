rule leaderboard:
    """Open LLM Leaderboard v1 of one policy through lm-eval (paper Tables 2/3); not an input of Table 1."""
    input:
        data=DATA_FILES,
        policy=policy_of,
    output:
        f"{RUN}/{{algorithm}}/seed{{seed}}/leaderboard.json",
    params:
        settings=fingerprint([config["eval"]["leaderboard"], config["data"]["seed"]]),
        cmd=stage("leaderboard"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output[0]),
    threads: config["runtime"]["threads"]
    resources:
        **HEAVY,
    log:
        f"{LOGS}/leaderboard/{{algorithm}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/leaderboard/{{algorithm}}_seed{{seed}}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --policy {input.policy} --out {params.out} > {log} 2>&1"
