rule sft:
    """Supervised fine-tuning on the human references (appendix H.1.2)."""
    input:
        data=DATA_FILES,
    output:
        SFT_REF,
    params:
        settings=fingerprint([config["model"], config["sft"]]),
        cmd=stage("sft"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output[0]),
    threads: workflow.cores
    resources:
        **HEAVY,
    log:
        f"{LOGS}/sft.log",
    benchmark:
        f"{BENCHMARKS}/sft.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --out {params.out} > {log} 2>&1"


rule reward_model:
    """Bradley-Terry reward model from the SFT backbone, normalized and evaluated on held-out pairs."""
    input:
        data=DATA_FILES,
        sft=SFT_REF,
    output:
        model=RM_REF,
        evaluation=f"{RUN}/rm/eval.json",
    params:
        settings=fingerprint(config["reward_model"]),
        cmd=stage("reward-model"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.model),
    threads: workflow.cores
    resources:
        **HEAVY,
    log:
        f"{LOGS}/reward_model.log",
    benchmark:
        f"{BENCHMARKS}/reward_model.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --out {params.out} > {log} 2>&1"
