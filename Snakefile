"""REBEL harness pipeline: data -> SFT -> reward model -> policy optimization -> evaluation -> tables.

    snakemake --cores all tables/table1.csv                          # embedded default config
    snakemake --cores all --configfile=workflow/configs/smoke.yaml tables/table1.csv   # any other config
    snakemake --cores all tables/search.csv                          # the learning-rate search
    snakemake --cores all tables/bandit.csv                          # the exact-optimum testbed
    snakemake --cores all figures/fig2.png                           # Figure 2: runtime and memory (CPU shape)
    snakemake --cores all tables/table2.csv tables/table3.csv        # the chat setting: Tables 2 and 3 (+ Figure 7)
    snakemake --cores all tables/tldr_chat.csv                       # the TL;DR policies through the chat evaluators
    snakemake --cores all tables/table6.csv figures/fig5.png figures/fig6.png   # η ablation, Figures 5 and 6
    snakemake --cores all render --config render_from=cache          # every table and figure from the cache
    snakemake --cores all tables/reproducibility.csv                 # Table 1 again under a second CPU kernel path
    snakemake --cores all tables/backends.csv                        # REBEL again with vLLM generation (make setup-vllm)
    snakemake --cores all figures/curves.png                         # learning curves (IQM, 95% CIs, ceiling)
    snakemake --cores all figures/fig3.png figures/fig4.png          # image generation (image_config; tables/image.csv)
"""

from snakemake.utils import min_version

min_version("9.0")

# snakemake --report report.html: the run's tables and figures with captions, job runtimes, the config.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/leaderboard.smk"
include: "workflow/rules/chat_eval.smk"
include: "workflow/rules/chat_common.smk"
include: "workflow/rules/chat.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/bandit.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/image.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/reproducibility.smk"
include: "workflow/rules/backends.smk"

# Tables and figures from small result files: seconds of CPU, run where Snakemake runs (a cluster's login node)
# instead of being submitted as cluster jobs.
localrules: table1, table6, search_table, tldr_chat, chat_table2, chat_table3, chat_external, figure2, generation_table, figure5, figure6, curves, render, \
    bandit_report, reproducibility, backends, image_report


rule all:
    input:
        "tables/table1.csv",
    default_target: True
