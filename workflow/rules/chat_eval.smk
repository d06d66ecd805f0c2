# AlpacaEval 2.0 and MT-Bench of every policy, judged through an OpenAI-compatible endpoint (the loopback
# gold judge in the embedded world), and Table 2 with Figure 7 (paper Tables 2-3; docs/chat-evaluation.md).
CHAT = f"{RUN}/chat"


rule chat_sets:
    """The AlpacaEval instructions (with baseline outputs) and the MT-Bench questions every policy answers."""
    input:
        data=DATA_FILES,
    output:
        instructions=f"{CHAT}/alpaca_instructions.json",
        questions=f"{CHAT}/mt_bench_questions.jsonl",
    params:
        settings=fingerprint([config["chat_eval"]["alpaca"], config["chat_eval"]["mt_bench"], config["data"]["seed"]]),
        cmd=stage("chat-sets"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        out=lambda wc, output: os.path.dirname(output.instructions),
    log:
        f"{LOGS}/chat_sets.log",
    conda:
        ENV
    shell:
        "{params.cmd} --data {params.data} --out {params.out} > {log} 2>&1"


rule chat_eval:
    """One policy's answers, judged: AlpacaEval 2.0 (alpaca-eval's annotator and metrics) and MT-Bench."""
    input:
        data=DATA_FILES,
        sets=rules.chat_sets.output,
        policy=policy_of,
    output:
        alpaca=f"{RUN}/{{algorithm}}/seed{{seed}}/chat/alpaca_eval.json",
        mt_bench=f"{RUN}/{{algorithm}}/seed{{seed}}/chat/mt_bench.json",
    params:
        settings=fingerprint([config["chat_eval"], config["eval"]["temperature"], config["data"]["prompt_length"]]),
        cmd=stage("chat-eval"),
        data=lambda wc, input: os.path.dirname(input.data[0]),
        sets=lambda wc, input: os.path.dirname(input.sets[0]),
        out=lambda wc, output: os.path.dirname(output.alpaca),
    threads: config["runtime"]["threads"]
    resources:
        **HEAVY,
    log:
        f"{LOGS}/chat_eval/{{algorithm}}_seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/chat_eval/{{algorithm}}_seed{{seed}}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data {params.data} --sets {params.sets} --policy {input.policy}"
        " --seed {wildcards.seed} --name {wildcards.algorithm}_seed{wildcards.seed} --out {params.out} > {log} 2>&1"


rule table2:
    """Table 2 (AlpacaEval 2.0, MT-Bench, Open LLM Leaderboard per policy), MT-Bench per category, Figure 7."""
    input:
        alpaca=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/chat/alpaca_eval.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
        mt_bench=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/chat/mt_bench.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
        leaderboard=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/leaderboard.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
    output:
        csv="tables/table2.csv",
        md="tables/table2.md",
        html=report("tables/table2.html", caption="../report/table2.rst", category="Table 2 (chat)"),
        mt_bench="tables/mt_bench.csv",
        png=report("figures/fig7.png", caption="../report/fig7.rst", category="Table 2 (chat)"),
        pdf="figures/fig7.pdf",
    params:
        cmd=stage("table2"),
        results=folder_above(4, "alpaca"),
    log:
        f"{LOGS}/table2.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md}"
        " --mt-bench-csv {output.mt_bench} --png {output.png} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"
