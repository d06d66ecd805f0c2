rule train:
    """One algorithm, one seed, through the shared online loop (resumes from its checkpoint)."""
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
    output:
        policy=f"{RUN}/{{algorithm}}/seed{{seed}}/policy/model.json",
        metrics=f"{RUN}/{{algorithm}}/seed{{seed}}/metrics.jsonl",
        run=f"{RUN}/{{algorithm}}/seed{{seed}}/run.json",
        **({"curve": f"{RUN}/{{algorithm}}/seed{{seed}}/curve.jsonl"} if config["eval"]["curve"]["every"] else {}),
    params:
        settings=lambda wc: fingerprint([policy_settings(config, wc.algorithm)["policy"],
                                         config["algorithm_params"].get(wc.algorithm, {}), config["eval"]["curve"]]),
        cmd=stage("train"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.run),
    threads: config["runtime"]["threads"]
    log:
        f"{LOGS}/train/{{algorithm}}_seed{{seed}}.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --rm {input.rm}"
        " --algorithm {wildcards.algorithm} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"
