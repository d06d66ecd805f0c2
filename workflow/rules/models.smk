rule sft:
    """Supervised fine-tuning on the human references (appendix H.1.2)."""
    input:
        DATA_FILES,
    output:
        SFT_REF,
    params:
        settings=fingerprint([config["model"], config["sft"]]),
        cmd=stage("sft"),
    threads: workflow.cores
    log:
        f"{LOGS}/sft.log",
    shell:
        "{params.cmd} --threads {threads} --data {DATA} --out {RUN}/sft > {log} 2>&1"


rule reward_model:
    """Bradley-Terry reward model from the SFT backbone, normalized and evaluated on held-out pairs."""
    input:
        DATA_FILES,
        sft=SFT_REF,
    output:
        model=RM_REF,
        evaluation=f"{RUN}/rm/eval.json",
    params:
        settings=fingerprint(config["reward_model"]),
        cmd=stage("reward-model"),
    threads: workflow.cores
    log:
        f"{LOGS}/reward_model.log",
    shell:
        "{params.cmd} --threads {threads} --data {DATA} --sft {input.sft} --out {RUN}/rm > {log} 2>&1"
