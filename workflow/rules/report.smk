rule table1:
    """Table 1: winrate, RM score and KL per algorithm over seeds, paper numbers beside."""
    input:
        expand(f"{RUN}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
        f"{DATA}/stats.json",
        f"{RUN}/rm/eval.json",
    output:
        csv="tables/table1.csv",
        md="tables/table1.md",
    params:
        cmd=stage("table1"),
    log:
        f"{LOGS}/table1.log",
    shell:
        "{params.cmd} --results {RUN} --csv {output.csv} --md {output.md} > {log} 2>&1"
