# The search: every algorithm gets the same learning-rate grid (search.lr, at the config's kl_coef),
# then every online algorithm the same kl_coef grid (search.kl_coef, at its configured learning rate);
# one run per point at search.seed (not a reported seed) with the reported runs' budget, judged on
# validation prompts (eval/search.py).
from eval.search import kl_sweep

SEARCH = f"{RUN}/search"
SEARCH_LRS = [f"{lr:g}" for lr in config["search"]["lr"]]
SEARCH_KL_RUNS = [f"{REPORT}/search/{algorithm}/kl{kl:g}/eval.json" for algorithm, kl in kl_sweep(config)]


rule search_train:
    """One algorithm at one grid learning rate, through the shared online loop."""
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
    output:
        policy=f"{SEARCH}/{{algorithm}}/lr{{lr}}/policy/model.json",
        run=f"{SEARCH}/{{algorithm}}/lr{{lr}}/run.json",
    params:
        # The grid point replaces the learning rate, so neither policy.lr nor policy_overrides enter.
        settings=lambda wc: fingerprint([{k: v for k, v in config["policy"].items() if k != "lr"},
                                         config["algorithm_params"].get(wc.algorithm, {})]),
        cmd=stage("train"),
        seed=config["search"]["seed"],
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.run),
        point=lambda wc: f"--lr {wc.lr}",
    threads: config["runtime"]["threads"]
    log:
        f"{LOGS}/search/{{algorithm}}_lr{{lr}}_train.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --rm {input.rm}"
        " --algorithm {wildcards.algorithm} --seed {params.seed} {params.point} --out {params.out} > {log} 2>&1"


rule search_evaluate:
    """The search run's judge winrate, RM score and KL on the validation prompts."""
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
        policy=f"{SEARCH}/{{algorithm}}/lr{{lr}}/policy/model.json",
    output:
        f"{SEARCH}/{{algorithm}}/lr{{lr}}/eval.json",
    params:
        settings=fingerprint([config["eval"], config["policy"]["temperature"]]),
        cmd=stage("evaluate"),
        seed=config["search"]["seed"],
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output[0]),
    threads: config["runtime"]["threads"]
    log:
        f"{LOGS}/search/{{algorithm}}_lr{{lr}}_evaluate.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --rm {input.rm}"
        " --policy {input.policy} --seed {params.seed} --split val --out {params.out} > {log} 2>&1"


use rule search_train as search_kl_train with:
    output:
        policy=f"{SEARCH}/{{algorithm}}/kl{{kl}}/policy/model.json",
        run=f"{SEARCH}/{{algorithm}}/kl{{kl}}/run.json",
    params:
        # One online algorithm at one grid kl_coef γ (Eq. 22) and its configured learning rate.
        settings=lambda wc: fingerprint([{k: v for k, v in policy_settings(config, wc.algorithm)["policy"].items()
                                          if k != "kl_coef"}, config["algorithm_params"].get(wc.algorithm, {})]),
        point=lambda wc: f"--kl-coef {wc.kl}",
    log:
        f"{LOGS}/search/{{algorithm}}_kl{{kl}}_train.log",


use rule search_evaluate as search_kl_evaluate with:
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
        policy=f"{SEARCH}/{{algorithm}}/kl{{kl}}/policy/model.json",
    output:
        f"{SEARCH}/{{algorithm}}/kl{{kl}}/eval.json",
    log:
        f"{LOGS}/search/{{algorithm}}_kl{{kl}}_evaluate.log",


rule search_table:
    """Every grid point's validation numbers, the learning rate selected per algorithm and the kl_coef selected
    for all online algorithms."""
    input:
        expand(f"{REPORT}/search/{{algorithm}}/lr{{lr}}/eval.json", algorithm=config["algorithms"], lr=SEARCH_LRS),
        SEARCH_KL_RUNS,
    output:
        csv="tables/search.csv",
        md="tables/search.md",
    params:
        cmd=stage("search-table"),
        results=lambda wc, input: os.path.dirname(os.path.dirname(os.path.dirname(input[0]))),
    log:
        f"{LOGS}/search/table.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md} > {log} 2>&1"
