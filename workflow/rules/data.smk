rule data:
    """Prompts, references, preference pairs and the tokenizer (synthetic, or from the Hub)."""
    output:
        DATA_FILES,
    params:
        settings=fingerprint(config["data"]),
        cmd=stage("data"),
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        f"{LOGS}/data.log",
    benchmark:
        f"{BENCHMARKS}/data.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --out {params.out} > {log} 2>&1"
