# Table 6 (REBEL's η ablation, appendix J): REBEL at each η of ablation.eta, otherwise exactly Table 1's run
# (the train and evaluate rules with one setting changed); the config's own η reuses Table 1's REBEL runs.
ABLATION = f"{RUN}/ablation"


wildcard_constraints:
    eta=r"[0-9.e+-]+",


use rule train as ablation_train with:
    output:
        policy=f"{ABLATION}/eta{{eta}}/seed{{seed}}/policy/model.json",
        metrics=f"{ABLATION}/eta{{eta}}/seed{{seed}}/metrics.jsonl",
        run=f"{ABLATION}/eta{{eta}}/seed{{seed}}/run.json",
    params:
        settings=lambda wc: fingerprint([policy_settings(config, "rebel")["policy"],
                                         config["algorithm_params"].get("rebel", {}) | {"eta": float(wc.eta)},
                                         config["runtime"]["generation_backend"]]),
        algorithm="rebel",
        point=lambda wc: f" --algorithm-param eta={wc.eta}",
    log:
        f"{LOGS}/ablation/eta{{eta}}_seed{{seed}}_train.log",
    benchmark:
        f"{BENCHMARKS}/ablation/eta{{eta}}_seed{{seed}}_train.tsv"


use rule evaluate as ablation_evaluate with:
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
        policy=f"{ABLATION}/eta{{eta}}/seed{{seed}}/policy/model.json",
    output:
        evaluation=f"{ABLATION}/eta{{eta}}/seed{{seed}}/eval.json",
        generations=f"{ABLATION}/eta{{eta}}/seed{{seed}}/generations.jsonl",
        kl_samples=f"{ABLATION}/eta{{eta}}/seed{{seed}}/kl_samples.jsonl",
    log:
        f"{LOGS}/ablation/eta{{eta}}_seed{{seed}}_evaluate.log",
    benchmark:
        f"{BENCHMARKS}/ablation/eta{{eta}}_seed{{seed}}_evaluate.tsv"


rule table6:
    """Table 6: winrate, RM score and KL per η over seeds, the paper's 2.8B numbers beside."""
    input:
        stats=f"{REPORT}/data/stats.json",
        runs=ablation_runs,
    output:
        csv="tables/table6.csv",
        md="tables/table6.md",
        html=report("tables/table6.html", caption="../report/table6.rst", category="Table 6 (η ablation)"),
    params:
        cmd=stage("table6"),
        results=folder_above(2, "stats"),
    log:
        f"{LOGS}/table6.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"
