def policy_of(wildcards):
    if wildcards.algorithm == "sft":
        return SFT_REF
    return f"{RUN}/{wildcards.algorithm}/seed{wildcards.seed}/policy/model.json"


rule evaluate:
    """Test-set generation, reward-model score, KL to the SFT policy and judge winrate (Table 1)."""
    input:
        DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
        policy=policy_of,
    output:
        evaluation=f"{RUN}/{{algorithm}}/seed{{seed}}/eval.json",
        generations=f"{RUN}/{{algorithm}}/seed{{seed}}/generations.jsonl",
    params:
        settings=fingerprint([config["eval"], config["policy"]["temperature"]]),
        cmd=stage("evaluate"),
        out=lambda wc: f"{RUN}/{wc.algorithm}/seed{wc.seed}",
    threads: config["runtime"]["threads"]
    log:
        f"{LOGS}/evaluate/{{algorithm}}_seed{{seed}}.log",
    shell:
        "{params.cmd} --threads {threads} --data {DATA} --sft {input.sft} --rm {input.rm}"
        " --policy {input.policy} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"
