# The one training rule: an algorithm at a seed through the shared online loop. The search and the η ablation
# derive their runs from it (search.smk, ablation.smk), changing only the run's folder and one setting.


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
                                         config["algorithm_params"].get(wc.algorithm, {}), config["eval"]["curve"],
                                         config["runtime"]["generation_backend"]]),
        cmd=TRAIN_STAGE,
        algorithm=lambda wc: wc.algorithm,
        seed=lambda wc: wc.seed,
        point="",  # a derived run's one changed setting, as train flags
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.run),
    threads: config["runtime"]["threads"]
    resources:
        **TRAINING,
    log:
        f"{LOGS}/train/{{algorithm}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{algorithm}}_seed{{seed}}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --rm {input.rm}"
        " --algorithm {params.algorithm} --seed {params.seed}{params.point} --out {params.out} > {log} 2>&1"
