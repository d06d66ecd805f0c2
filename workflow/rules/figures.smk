# Table 6 (REBEL's η ablation, appendix J), Figures 5 and 6 (appendices K, L), and `render`: every table
# and figure. The render rules read only small result files under REPORT (common.smk), never a policy.
from eval.ablation import run_dirs
from rebel.algorithms import resolve_algorithm

ABLATION = f"{RUN}/ablation"
ONLINE = [a for a in config["algorithms"] if not resolve_algorithm(a).offline]
for _name in config["figures"]["fig5"]:
    if _name not in ONLINE:
        sys.exit(f"config error: config: key 'figures.fig5': '{_name}' is not one of the online algorithms "
                 f"of 'algorithms' ({', '.join(ONLINE)})")


wildcard_constraints:
    eta=r"[0-9.e+-]+",


rule ablation_train:
    """REBEL at one η of ablation.eta and one seed, otherwise exactly Table 1's REBEL run."""
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
    output:
        policy=f"{ABLATION}/eta{{eta}}/seed{{seed}}/policy/model.json",
        metrics=f"{ABLATION}/eta{{eta}}/seed{{seed}}/metrics.jsonl",
        run=f"{ABLATION}/eta{{eta}}/seed{{seed}}/run.json",
    params:
        settings=lambda wc: fingerprint([policy_settings(config, "rebel")["policy"],
                                         config["algorithm_params"].get("rebel", {}) | {"eta": float(wc.eta)}]),
        cmd=stage("train"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.run),
    threads: config["runtime"]["threads"]
    log:
        f"{LOGS}/ablation/eta{{eta}}_seed{{seed}}_train.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --rm {input.rm} --algorithm rebel"
        " --algorithm-param eta={wildcards.eta} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"


rule ablation_evaluate:
    """Test-set evaluation of one ablation run (as the evaluate rule does for Table 1)."""
    input:
        data=DATA_FILES,
        sft=SFT_REF,
        rm=RM_REF,
        policy=f"{ABLATION}/eta{{eta}}/seed{{seed}}/policy/model.json",
    output:
        evaluation=f"{ABLATION}/eta{{eta}}/seed{{seed}}/eval.json",
        generations=f"{ABLATION}/eta{{eta}}/seed{{seed}}/generations.jsonl",
        kl_samples=f"{ABLATION}/eta{{eta}}/seed{{seed}}/kl_samples.jsonl",
    params:
        settings=fingerprint([config["eval"], config["policy"]["temperature"]]),
        cmd=stage("evaluate"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.evaluation),
    threads: config["runtime"]["threads"]
    log:
        f"{LOGS}/ablation/eta{{eta}}_seed{{seed}}_evaluate.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sft {input.sft} --rm {input.rm}"
        " --policy {input.policy} --seed {wildcards.seed} --out {params.out} > {log} 2>&1"


rule table6:
    """Table 6: winrate, RM score and KL per η over seeds, the paper's 2.8B numbers beside."""
    input:
        [f"{folder}/eval.json" for folder in run_dirs(config, Path(REPORT)).values()],
    output:
        csv="tables/table6.csv",
        md="tables/table6.md",
    params:
        cmd=stage("table6"),
        results=lambda wc, input: str(Path(input[0]).parents[3 if Path(input[0]).parent.parent.name.startswith("eta") else 2]),
    log:
        f"{LOGS}/table6.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md} > {log} 2>&1"


rule figure5:
    """Figure 5: RM score vs KL during training (2-std ellipses) and per KL bin of the final policy's test samples
    at the training temperature."""
    input:
        expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/{{name}}", algorithm=config["figures"]["fig5"],
               seed=config["seeds"], name=["metrics.jsonl", "kl_samples.jsonl"]),
    output:
        png="figures/fig5.png",
        pdf="figures/fig5.pdf",
    params:
        cmd=stage("figure5"),
        results=lambda wc, input: str(Path(input[0]).parents[2]),
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
        expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/metrics.jsonl", algorithm=ONLINE, seed=config["seeds"]),
    output:
        png="figures/fig6.png",
        pdf="figures/fig6.pdf",
    params:
        cmd=stage("figure6"),
        results=lambda wc, input: str(Path(input[0]).parents[2]),
        algorithms=" ".join(f"'{a}'" for a in ONLINE),
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
        png="figures/curves.png",
        pdf="figures/curves.pdf",
        csv="tables/curves.csv",
    params:
        cmd=stage("curves"),
        results=lambda wc, input: str(Path(input[0]).parents[2]),
        algorithms=" ".join(f"'{a}'" for a in config["algorithms"]),
    log:
        f"{LOGS}/curves.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --algorithms {params.algorithms} --png {output.png}"
        " --csv {output.csv} > {log} 2>&1"


RENDER_TARGETS = ["tables/table1.csv", "tables/table6.csv", "tables/search.csv", "tables/bandit.csv",
                  "tables/table2.csv", "figures/fig2.png", "figures/fig5.png", "figures/fig6.png"]
if config["eval"]["curve"]["every"] is not None:  # learning curves are on (eval.curve.every)
    RENDER_TARGETS.append("figures/curves.png")
if config["render_from"] is not None:  # the cross-kernel-path table, from the exported second run
    RENDER_TARGETS.append("tables/reproducibility.csv")


rule render:
    """Every table and figure (with render_from set: from an exported result set, no training)."""
    input:
        RENDER_TARGETS,
