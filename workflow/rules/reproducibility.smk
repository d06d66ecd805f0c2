# The cross-kernel-path check: Table 1 again under reproducibility.kernels, its means compared with this run's.
KERNELS_A = config["runtime"]["cpu_kernels"]
KERNELS_B = config["reproducibility"]["kernels"]
if KERNELS_A == KERNELS_B:
    sys.exit(f"config error: config: key 'reproducibility.kernels': '{KERNELS_B}' is runtime.cpu_kernels; "
             "the check needs a second kernel path (native, portable or scalar)")
# The second run: a nested Snakemake in its own working directory, on this run's effective config. Its
# results/<name> folder is exported with the others (rebel/cache.py), so the table renders from a cache too.
REPRO_DIR = f"results/reproducibility/{KERNELS_B}"
REPRO_REPORT = f"{REPORT_ROOT}/reproducibility/{KERNELS_B}/results/{config['name']}"


rule reproducibility_run:
    """Table 1 of this config run again, every stage under the CPU kernel path reproducibility.kernels."""
    output:
        table=f"{REPRO_DIR}/tables/table1.csv",
        evaluations=expand(f"{REPRO_DIR}/{RUN}/{{algorithm}}/seed{{seed}}/eval.json",
                           algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
    params:
        snakefile=workflow.main_snakefile,
        directory=lambda wc, output: str(Path(output.table).parents[1]),
        # This run's effective config (written when the run starts); its content reruns the job when it changes.
        configfile=os.path.abspath(CONFIG_FILE),
        settings=fingerprint(config),
        # The second run's own reproducibility.kernels names this run's path (the two must differ there too).
        overrides=f"runtime='{{cpu_kernels: {KERNELS_B}}}' reproducibility='{{kernels: {KERNELS_A}}}' render_from=",
    threads: workflow.cores
    resources:
        **HEAVY,
    log:
        f"{LOGS}/reproducibility_run.log",
    benchmark:
        f"{BENCHMARKS}/reproducibility_run.tsv"
    conda:
        ENV
    shell:
        "snakemake tables/table1.csv --snakefile {params.snakefile} --directory {params.directory} --cores {threads}"
        " --rerun-incomplete --configfile {params.configfile} --config {params.overrides} > {log} 2>&1"


rule reproducibility:
    """Table 1's means under the two kernel paths, compared within 3 standard errors (eval/reproducibility.py)."""
    input:
        a=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=["sft", *config["algorithms"]],
                 seed=config["seeds"]),
        b=expand(f"{REPRO_REPORT}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=["sft", *config["algorithms"]],
                 seed=config["seeds"]),
    output:
        csv="tables/reproducibility.csv",
        md="tables/reproducibility.md",
        html=report("tables/reproducibility.html", caption="../report/reproducibility.rst", category="Reproducibility"),
    params:
        cmd=stage("reproducibility"),
        results_a=folder_above(3, "a"),
        results_b=folder_above(3, "b"),
        labels=f"--label-a {KERNELS_A} --label-b {KERNELS_B}",
    log:
        f"{LOGS}/reproducibility.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results-a {params.results_a} --results-b {params.results_b} {params.labels}"
        " --csv {output.csv} --md {output.md} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"
