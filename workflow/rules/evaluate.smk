# The one evaluation rule (Table 1's numbers of a policy); the search and the η ablation derive theirs from it.


rule evaluate:
    """Generation, reward-model score, judge winrate, and KL(π_T‖π_ref,T) on a draw at the training temperature
    (Table 1: the test prompts)."""
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
        policy=policy_of,
    output:
        evaluation=f"{RUN}/{{algorithm}}/seed{{seed}}/eval.json",
        generations=f"{RUN}/{{algorithm}}/seed{{seed}}/generations.jsonl",
        kl_samples=f"{RUN}/{{algorithm}}/seed{{seed}}/kl_samples.jsonl",
    params:
        settings=fingerprint([config["eval"], config["policy"]["temperature"], config["runtime"]["generation_backend"]]),
        cmd=stage("evaluate"),
        seed=lambda wc: wc.seed,
        split="test",
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.evaluation),
        judge_cache=JUDGE_CACHE,
    threads: config["runtime"]["threads"]
    resources:
        **HEAVY,
    log:
        f"{LOGS}/evaluate/{{algorithm}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/{{algorithm}}_seed{{seed}}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --rm {input.rm}"
        " --policy {input.policy} --seed {params.seed} --split {params.split} --judge-cache {params.judge_cache}"
        " --out {params.out} > {log} 2>&1"


rule ceiling:
    """The task's ceiling on the same prompts, references and A/B order: the oracle summaries (synthetic task)."""
    input:
        data=DATA_FILES,
        rm=RM_REF,
    output:
        evaluation=f"{RUN}/ceiling/seed{{seed}}/eval.json",
        **({"curve": f"{RUN}/ceiling/seed{{seed}}/curve.json"} if config["eval"]["curve"]["every"] else {}),
    params:
        settings=fingerprint([config["eval"], config["policy"]["missing_eos_penalty"]]),
        cmd=stage("ceiling"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.evaluation),
        judge_cache=JUDGE_CACHE,
    resources:
        **HEAVY,
    log:
        f"{LOGS}/evaluate/ceiling_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/ceiling_seed{{seed}}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --data {params.data} --rm {input.rm} --seed {wildcards.seed}"
        " --judge-cache {params.judge_cache} --out {params.out} > {log} 2>&1"
