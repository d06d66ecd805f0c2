# The search: every algorithm gets the same learning-rate grid (search.lr, at the config's kl_coef),
# then every online algorithm the same kl_coef grid (search.kl_coef, at its configured learning rate);
# one run per point at search.seed (not a reported seed) with the reported runs' budget, judged on
# validation prompts (eval/search.py). Each point is the train and evaluate rules with one setting changed.
SEARCH = f"{RUN}/search"
SEARCH_LRS = [f"{lr:g}" for lr in config["search"]["lr"]]


use rule train as search_train with:
    output:
        policy=f"{SEARCH}/{{algorithm}}/lr{{lr}}/policy/model.json",
        run=f"{SEARCH}/{{algorithm}}/lr{{lr}}/run.json",
    params:
        # The grid point replaces the learning rate, so neither policy.lr nor policy_overrides enter.
        settings=lambda wc: fingerprint([{k: v for k, v in config["policy"].items() if k != "lr"},
                                         config["algorithm_params"].get(wc.algorithm, {}),
                                         config["runtime"]["generation_backend"]]),
        seed=config["search"]["seed"],
        point=lambda wc: f" --lr {wc.lr}",
    log:
        f"{LOGS}/search/{{algorithm}}_lr{{lr}}_train.log",
    benchmark:
        f"{BENCHMARKS}/search/{{algorithm}}_lr{{lr}}_train.tsv"


use rule train as search_kl_train with:
    output:
        policy=f"{SEARCH}/{{algorithm}}/kl{{kl}}/policy/model.json",
        run=f"{SEARCH}/{{algorithm}}/kl{{kl}}/run.json",
    params:
        # One online algorithm at one grid kl_coef γ (Eq. 22) and its configured learning rate.
        settings=lambda wc: fingerprint([{k: v for k, v in policy_settings(config, wc.algorithm)["policy"].items()
                                          if k != "kl_coef"}, config["algorithm_params"].get(wc.algorithm, {}),
                                         config["runtime"]["generation_backend"]]),
        seed=config["search"]["seed"],
        point=lambda wc: f" --kl-coef {wc.kl}",
    log:
        f"{LOGS}/search/{{algorithm}}_kl{{kl}}_train.log",
    benchmark:
        f"{BENCHMARKS}/search/{{algorithm}}_kl{{kl}}_train.tsv"


use rule evaluate as search_evaluate with:
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
        policy=f"{SEARCH}/{{algorithm}}/{{point}}/policy/model.json",
    output:
        evaluation=f"{SEARCH}/{{algorithm}}/{{point}}/eval.json",
        generations=f"{SEARCH}/{{algorithm}}/{{point}}/generations.jsonl",
        kl_samples=f"{SEARCH}/{{algorithm}}/{{point}}/kl_samples.jsonl",
    params:
        seed=config["search"]["seed"],
        split="val",
    log:
        f"{LOGS}/search/{{algorithm}}_{{point}}_evaluate.log",
    benchmark:
        f"{BENCHMARKS}/search/{{algorithm}}_{{point}}_evaluate.tsv"
    wildcard_constraints:
        point=r"(lr|kl)[0-9.e+-]+",


rule search_table:
    """Every grid point's validation numbers, the learning rate selected per algorithm and the kl_coef selected
    for all online algorithms."""
    input:
        search_runs,
    output:
        csv="tables/search.csv",
        md="tables/search.md",
        html=report("tables/search.html", caption="../report/search.rst", category="Search"),
    params:
        cmd=stage("search-table"),
        results=folder_above(3),
    log:
        f"{LOGS}/search/table.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"
