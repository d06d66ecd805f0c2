# Figure 2 (paper §5.1): runtime and peak memory of one policy iteration per algorithm
# (rebel/benchmark.py). The CPU shape builds anywhere; the Pythia-2.8B result needs a GPU and is read
# when present (run by hand: python -m rebel benchmark --shape pythia-2.8b --out results/benchmark/pythia-2.8b).
FIG2_CPU_SHAPE = "pythia-70m"
FIG2_GPU_RESULT = f"{REPORT_ROOT}/benchmark/pythia-2.8b/benchmark.json"
# hf vs vllm generation throughput (docs/vllm.md): measured by hand in the vllm environment
# (python -m rebel benchmark --generation), tabulated when present (the GPU shape first).
GENERATION_RESULTS = [path for path in (f"{REPORT_ROOT}/benchmark/{shape}/generation.json"
                                        for shape in ("pythia-1.4b", "pythia-70m")) if os.path.exists(path)]


wildcard_constraints:
    shape=r"pythia-[0-9.]+[mb]",  # a shape of rebel/benchmark.py (its CLI names the known ones)


rule benchmark:
    """Every Figure 2 algorithm on one shape, each in a fresh process (tldr-2.8b's H.1.5 settings)."""
    output:
        "results/benchmark/{shape}/benchmark.json",
    params:
        config=str(CONFIG_DIR / "tldr-2.8b.yaml"),
        out=lambda wc, output: os.path.dirname(output[0]),
    resources:
        **HEAVY,
    log:
        "results/benchmark/logs/{shape}.log",
    conda:
        ENV
    shell:
        "python -m rebel benchmark --config {params.config} --shape {wildcards.shape} --out {params.out} > {log} 2>&1"


rule figure2:
    """Figure 2 and its table from the benchmark results (the GPU result first, when there is one)."""
    input:
        ([FIG2_GPU_RESULT] if os.path.exists(FIG2_GPU_RESULT) else [])
        + [f"{REPORT_ROOT}/benchmark/{FIG2_CPU_SHAPE}/benchmark.json"],
    output:
        png=report("figures/fig2.png", caption="../report/fig2.rst", category="Figure 2 (runtime and memory)"),
        pdf="figures/fig2.pdf",
        csv="tables/fig2.csv",
        md="tables/fig2.md",
        html=report("tables/fig2.html", caption="../report/fig2_table.rst", category="Figure 2 (runtime and memory)"),
    log:
        "results/benchmark/logs/figure2.log",
    conda:
        ENV
    shell:
        "python -m rebel figure2 --benchmarks {input} --png {output.png} --csv {output.csv} --md {output.md}"
        " > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"


rule generation_table:
    """The generation benchmarks (hf and vllm tokens/s and their ratio) as one table."""
    input:
        GENERATION_RESULTS,
    output:
        md="tables/generation.md",
        html=report("tables/generation.html", caption="../report/generation.rst", category="Generation backends"),
    log:
        "results/benchmark/logs/generation_table.log",
    conda:
        ENV
    shell:
        "python -m rebel generation-table --benchmarks {input} --md {output.md} > {log} 2>&1"
        " && python -m eval.report_html {output.md} {output.html}"
