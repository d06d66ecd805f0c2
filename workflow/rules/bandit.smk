# The exact-optimum testbed: a tabular bandit with a known KL-regularized optimum (rebel/bandit.py).
import yaml

BANDIT_CONFIG = str(CONFIG_DIR / "testbed" / "bandit.yaml")
BANDIT_SETTINGS = yaml.safe_load(Path(BANDIT_CONFIG).read_text())


rule bandit_run:
    """Every seed of one algorithm on the tabular bandit (seconds on a CPU)."""
    input:
        config=BANDIT_CONFIG,
    output:
        expand("results/bandit/{{algorithm}}/seed{seed}.jsonl", seed=BANDIT_SETTINGS["seeds"]),
    params:
        cmd=stage("bandit"),
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/bandit/logs/{algorithm}.log",
    benchmark:
        "results/bandit/benchmarks/{algorithm}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads 1 --bandit-config {input.config} --algorithm {wildcards.algorithm}"
        " --out {params.out} > {log} 2>&1"


rule bandit_report:
    """Gap to J(π*) and KL to π* per algorithm: table and figure."""
    input:
        config=BANDIT_CONFIG,
        runs=expand(f"{REPORT_ROOT}/bandit/{{algorithm}}/seed{{seed}}.jsonl", algorithm=BANDIT_SETTINGS["algorithms"],
                    seed=BANDIT_SETTINGS["seeds"]),
    output:
        csv="tables/bandit.csv",
        md="tables/bandit.md",
        html=report("tables/bandit.html", caption="../report/bandit.rst", category="Exact-optimum testbed"),
        png=report("figures/bandit.png", caption="../report/bandit_figure.rst", category="Exact-optimum testbed"),
        pdf="figures/bandit.pdf",
    params:
        cmd=stage("bandit-report"),
        results=folder_above(2, "runs"),
    log:
        "results/bandit/logs/report.log",
    conda:
        ENV
    shell:
        "{params.cmd} --bandit-config {input.config} --results {params.results} --csv {output.csv}"
        " --md {output.md} --png {output.png} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"
