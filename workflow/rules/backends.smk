# The generation-backend check: Table 1's rows of backends.algorithms run again with the other generation backend
# (hf <-> vllm), their means compared with this run's within seed noise (eval/reproducibility.py).
BACKEND_A = config["runtime"]["generation_backend"]
BACKEND_B = {"hf": "vllm", "vllm": "hf"}[BACKEND_A]
if unknown := [a for a in config["backends"]["algorithms"] if a not in config["algorithms"]]:
    sys.exit(f"config error: config: key 'backends.algorithms': {unknown} are not among this config's algorithms "
             f"{config['algorithms']}")
BACKEND_ALGORITHMS = ["sft", *config["backends"]["algorithms"]]
BACKEND_DIR = f"results/backends/{BACKEND_B}"
BACKEND_REPORT = f"{REPORT_ROOT}/backends/{BACKEND_B}/results/{config['name']}"
# The second run's environment (backends.venv, e.g. .venv-vllm of `make setup-vllm`; relative to the repository)
# goes first on its PATH.
BACKEND_VENV = config["backends"]["venv"] and Path(workflow.main_snakefile).parent / config["backends"]["venv"]
BACKEND_PATH = f"PATH={BACKEND_VENV}/bin:$PATH " if BACKEND_VENV else ""


rule backends_run:
    """The SFT and backends.algorithms rows of Table 1 evaluated again, every stage with the other backend."""
    output:
        evaluations=expand(f"{BACKEND_DIR}/{RUN}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=BACKEND_ALGORITHMS,
                           seed=config["seeds"]),
    params:
        snakefile=workflow.main_snakefile,
        directory=lambda wc, output: str(Path(output.evaluations[0]).parents[4]),
        # The same files of the second run, relative to its working directory.
        targets=expand(f"{RUN}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=BACKEND_ALGORITHMS, seed=config["seeds"]),
        configfile=os.path.abspath(CONFIG_FILE),
        settings=fingerprint(config),
        path=BACKEND_PATH,
        overrides=f"runtime='{{generation_backend: {BACKEND_B}}}' render_from=",
    threads: workflow.cores
    resources:
        **HEAVY,
    log:
        f"{LOGS}/backends_run.log",
    benchmark:
        f"{BENCHMARKS}/backends_run.tsv"
    conda:
        ENV
    shell:
        "{params.path}snakemake {params.targets} --snakefile {params.snakefile} --directory {params.directory}"
        " --cores {threads} --rerun-incomplete --configfile {params.configfile} --config {params.overrides} > {log} 2>&1"


rule backends:
    """backends.algorithms' Table 1 means under the two generation backends, compared within 3 standard errors."""
    input:
        a=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=BACKEND_ALGORITHMS, seed=config["seeds"]),
        b=expand(f"{BACKEND_REPORT}/{{algorithm}}/seed{{seed}}/eval.json", algorithm=BACKEND_ALGORITHMS,
                 seed=config["seeds"]),
    output:
        csv="tables/backends.csv",
        md="tables/backends.md",
        html=report("tables/backends.html", caption="../report/backends.rst", category="Reproducibility"),
    params:
        cmd=stage("reproducibility"),
        results_a=folder_above(3, "a"),
        results_b=folder_above(3, "b"),
        labels=f"--label-a {BACKEND_A} --label-b {BACKEND_B}",
        algorithms=" ".join(config["backends"]["algorithms"]),
    log:
        f"{LOGS}/backends.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results-a {params.results_a} --results-b {params.results_b} {params.labels} --subject backends"
        " --algorithms {params.algorithms} --csv {output.csv} --md {output.md} > {log} 2>&1"
        " && python -m eval.report_html {output.md} {output.html}"
