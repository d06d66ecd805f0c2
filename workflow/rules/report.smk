rule table1:
    """Table 1: winrate, RM score and KL per algorithm over seeds, paper numbers beside; the budget table; a copy
    of the effective config beside them."""
    input:
        evaluations=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
        runs=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/run.json", algorithm=config["algorithms"], seed=config["seeds"]),
        stats=f"{REPORT}/data/stats.json",
        rm=f"{REPORT}/rm/eval.json",
        ceiling=expand(f"{REPORT}/ceiling/seed{{seed}}/eval.json", seed=config["seeds"])
        if config["data"]["source"] == "synthetic" else [],
    output:
        csv="tables/table1.csv",
        md="tables/table1.md",
        html=report("tables/table1.html", caption="../report/table1.rst", category="Table 1"),
        budget="tables/table1_budget.csv",
        budget_html=report("tables/table1_budget.html", caption="../report/budget.rst", category="Table 1"),
        config=report("tables/config.yaml", caption="../report/config.rst", category="Configuration"),
    params:
        settings=fingerprint(config),  # the table and its config copy follow every config change
        cmd=stage("table1"),
        config=CONFIG_FILE,
        results=folder_above(2, "stats"),
    log:
        f"{LOGS}/table1.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md}"
        " --budget {output.budget} > {log} 2>&1 && cp {params.config} {output.config} && python -m eval.report_html {output.md} {output.html}"
        " && python -m eval.report_html {output.budget} {output.budget_html}"
