# The TL;DR policies of Table 1 through the chat evaluators: AlpacaEval 2.0 and MT-Bench, judged through an
# OpenAI-compatible endpoint (the loopback gold judge in the embedded world), with the leaderboard (tables/tldr_chat.csv;
# docs/chat-evaluation.md). The chat setting's own training and Tables 2 and 3 are chat.smk's.
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


rule tldr_chat:
    """The TL;DR policies through the chat evaluators (AlpacaEval 2.0, MT-Bench, Open LLM Leaderboard), MT-Bench per
    category and its radar chart: the chat setting's Tables 2 and 3 are chat.smk's."""
    input:
        alpaca=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/chat/alpaca_eval.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
        mt_bench=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/chat/mt_bench.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
        leaderboard=expand(f"{REPORT}/{{algorithm}}/seed{{seed}}/leaderboard.json", algorithm=["sft", *config["algorithms"]], seed=config["seeds"]),
    output:
        csv="tables/tldr_chat.csv",
        md="tables/tldr_chat.md",
        html=report("tables/tldr_chat.html", caption="../report/tldr_chat.rst", category="TL;DR policies as chat models"),
        mt_bench="tables/tldr_mt_bench.csv",
        png="figures/tldr_mt_bench.png",
        pdf="figures/tldr_mt_bench.pdf",
    params:
        cmd=stage("tldr-chat"),
        results=folder_above(4, "alpaca"),
    log:
        f"{LOGS}/tldr_chat.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md}"
        " --mt-bench-csv {output.mt_bench} --png {output.png} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"
