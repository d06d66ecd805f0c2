"""REBEL harness pipeline: data -> SFT -> reward model -> policy optimization -> evaluation -> tables.

    snakemake --cores all tables/table1.csv                          # embedded default config
    snakemake --cores all --configfile workflow/configs/smoke.yaml   # any other config
    snakemake --cores all tables/search.csv                          # the learning-rate search
    snakemake --cores all tables/bandit.csv                          # the exact-optimum testbed
"""

from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/bandit.smk"


rule all:
    input:
        "tables/table1.csv",
    default_target: True
