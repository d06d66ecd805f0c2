rule train:
    """One algorithm, one seed, through the shared online loop (resumes from its checkpoint)."""
    input:
        DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
    output:
        policy=f"{RUN}/{{algorithm}}/seed{{seed}}/policy/model.json",
        metrics=f"{RUN}/{{algorithm}}/seed{{seed}}/metrics.jsonl",
        run=f"{RUN}/{{algorithm}}/seed{{seed}}/run.json",
    params:
        settings=lambda wc: fingerprint([config["policy"], config["algorithm_params"].get(wc.algorithm, {})]),
        cmd=stage("train"),
        out=lambda wc: f"{RUN}/{wc.algorithm}/seed{wc.seed}",
    threads: config["runtime"]["threads"]
    log:
        f"{LOGS}/train/{{algorithm}}_seed{{seed}}.log",
    shell:
        "{params.cmd} --threads {threads} --data {DATA} --sft {input.sft} --rm {input.rm}"
        " --algorithm {wildcards.algorithm} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"
