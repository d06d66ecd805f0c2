# Figures 5 and 6 (appendices K, L), the learning curves, and `render`: every table and figure. These rules
# read only small result files under REPORT (common.smk), never a policy.


rule figure5:
    """Figure 5: RM score vs KL during training (2-std ellipses) and per KL bin of the final policy's test samples
    at the training temperature."""
    input:
        expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/{{name}}", algorithm=config["figures"]["fig5"],
               seed=config["seeds"], name=["metrics.jsonl", "kl_samples.jsonl"]),
    output:
        png=report("figures/fig5.png", caption="../report/fig5.rst", category="Figures 5 and 6"),
        pdf="figures/fig5.pdf",
    params:
        cmd=stage("figure5"),
        results=folder_above(3),
        algorithms=" ".join(f"'{a}'" for a in config["figures"]["fig5"]),
    log:
        f"{LOGS}/figure5.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --algorithms {params.algorithms} --png {output.png} > {log} 2>&1"


rule figure6:
    """Figure 6: the regression MSE of Eq. 1 per iteration, of every online algorithm that logs it (REBEL)."""
    input:
        lambda wc: expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/metrics.jsonl", algorithm=online(),
                          seed=config["seeds"]),
    output:
        png=report("figures/fig6.png", caption="../report/fig6.rst", category="Figures 5 and 6"),
        pdf="figures/fig6.pdf",
    params:
        cmd=stage("figure6"),
        results=folder_above(3),
        algorithms=lambda wc: " ".join(f"'{a}'" for a in online()),
    log:
        f"{LOGS}/figure6.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --algorithms {params.algorithms} --png {output.png} > {log} 2>&1"


rule curves:
    """Learning curves: each algorithm's validation winrate (else gold quality, else RM score) against the
    reward-model queries it spent (DPO: preference pairs), IQM over seeds with its 95% CI; the task's ceiling
    on the same validation prompts (synthetic task)."""
    input:
        expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/curve.jsonl", algorithm=config["algorithms"], seed=config["seeds"]),
        expand(f"{REPORT}/ceiling/seed{{seed}}/curve.json", seed=config["seeds"])
        if config["data"]["source"] == "synthetic" else [],
    output:
        png=report("figures/curves.png", caption="../report/curves.rst", category="Learning curves"),
        pdf="figures/curves.pdf",
        csv="tables/curves.csv",
    params:
        cmd=stage("curves"),
        results=folder_above(3),
        algorithms=" ".join(f"'{a}'" for a in config["algorithms"]),
    log:
        f"{LOGS}/curves.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --algorithms {params.algorithms} --png {output.png}"
        " --csv {output.csv} > {log} 2>&1"


RENDER_TARGETS = ["tables/table1.csv", "tables/table6.csv", "tables/search.csv", "tables/bandit.csv",
                  "tables/tldr_chat.csv", "figures/fig2.png", "figures/fig5.png", "figures/fig6.png", *IMAGE_TARGETS,
                  *(target for table in CHAT_CFG for target in CHAT_TARGETS[table])]
if config["eval"]["curve"]["every"] is not None:  # learning curves are on (eval.curve.every)
    RENDER_TARGETS.append("figures/curves.png")
if GENERATION_RESULTS:  # hf vs vllm throughput, when measured (benchmark.smk)
    RENDER_TARGETS.append("tables/generation.md")
if config["render_from"] is not None:  # the cross-kernel-path and backend tables, from the exported second runs
    RENDER_TARGETS += ["tables/reproducibility.csv", "tables/backends.csv"]


rule render:
    """Every table and figure (with render_from set: from an exported result set, no training)."""
    input:
        RENDER_TARGETS,
