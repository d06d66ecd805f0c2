rule data:
    """Prompts, references, preference pairs and the tokenizer (synthetic, or from the Hub)."""
    output:
        DATA_FILES,
    params:
        settings=fingerprint(config["data"]),
        cmd=stage("data"),
    log:
        f"{LOGS}/data.log",
    shell:
        "{params.cmd} --out {DATA} > {log} 2>&1"
