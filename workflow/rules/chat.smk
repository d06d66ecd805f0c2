# The general-chat setting (paper §5.2; docs/chat-training.md): Table 2 (small batches, pairs from pi_t) and
# Table 3 (the large-batch best/worst-of-N ablation), each its own config (config key `chat`) of the main
# schema, run through the same stages as Table 1 (data, SFT, reward model, the shared loop) and judged by the
# chat evaluators (AlpacaEval 2.0, MT-Bench, Arena-Hard through chat_eval.judge; the leaderboard via lm-eval).
# Both tables also render from a cached result set (render_from).
wildcard_constraints:
    chat_run="|".join(re.escape(n) for n in CHAT_RUNS) or "(?!)",
    chat_policy=r"sft|external/[^/]+|[^/]+/seed\d+(/iter\d+)?",
    chat_seed=r"\d+",


rule chat_data:
    """The chat prompts (the embedded chat task, or a chat data set's) and the tokenizer with its chat template."""
    output:
        [f"results/{{chat_run}}/data/{name}" for name in ("train.jsonl", "val.jsonl", "test.jsonl",
                                                          "prefs_train.jsonl", "prefs_val.jsonl", "stats.json",
                                                          "tokenizer/tokenizer.json")],
    params:
        settings=lambda wc: fingerprint(_chat(wc)["data"]),
        cmd=lambda wc: chat_stage("data", wc),
    log:
        "results/{chat_run}/logs/data.log",
    conda:
        ENV
    shell:
        "{params.cmd} --out results/{wildcards.chat_run}/data > {log} 2>&1"


rule chat_sft:
    """The chat policy everything starts from: trained here (embedded), or the published chat model."""
    input:
        "results/{chat_run}/data/train.jsonl",
    output:
        "results/{chat_run}/sft/model.json",
    params:
        settings=lambda wc: fingerprint([_chat(wc)["model"], _chat(wc)["sft"]]),
        cmd=lambda wc: chat_stage("sft", wc),
    threads: workflow.cores
    resources:
        **HEAVY,
    log:
        "results/{chat_run}/logs/sft.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data results/{wildcards.chat_run}/data"
        " --out results/{wildcards.chat_run}/sft > {log} 2>&1"


rule chat_reward_model:
    """The chat reward model: Bradley-Terry on the task's pairs (embedded), or a published one in its layout."""
    input:
        data="results/{chat_run}/data/train.jsonl",
        sft="results/{chat_run}/sft/model.json",
    output:
        "results/{chat_run}/rm/model.json",
    params:
        settings=lambda wc: fingerprint(_chat(wc)["reward_model"]),
        cmd=lambda wc: chat_stage("reward-model", wc),
    threads: workflow.cores
    resources:
        **HEAVY,
    log:
        "results/{chat_run}/logs/reward_model.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data results/{wildcards.chat_run}/data --sft {input.sft}"
        " --out results/{wildcards.chat_run}/rm > {log} 2>&1"


rule chat_train:
    """One chat algorithm and seed through the shared loop (DPO of Table 3: on another run's recorded pairs)."""
    input:
        data=lambda wc: f"{chat_base(wc.chat_run)}/data/train.jsonl",
        sft=lambda wc: f"{chat_base(wc.chat_run)}/sft/model.json",
        rm=lambda wc: f"{chat_base(wc.chat_run)}/rm/model.json",
        pairs_run=lambda wc: chat_pairs(wc)[0] if chat_pairs(wc) else [],
    output:
        policy="results/{chat_run}/{chat_algorithm}/seed{chat_seed}/policy/model.json",
        run="results/{chat_run}/{chat_algorithm}/seed{chat_seed}/run.json",
    params:
        settings=lambda wc: fingerprint([policy_settings(_chat(wc), wc.chat_algorithm)["policy"],
                                         _chat(wc)["algorithm_params"].get(wc.chat_algorithm, {}),
                                         _chat(wc)["variants"]]),
        cmd=lambda wc: f"{launcher(_chat(wc)['runtime'])} train --config {_chat_file(wc)}",
        prefs=lambda wc: f" --prefs {chat_pairs(wc)[1]}" if chat_pairs(wc) else "",
    threads: 1
    resources:
        **HEAVY,
    log:
        "results/{chat_run}/logs/train/{chat_algorithm}_seed{chat_seed}.log",
    benchmark:
        "results/{chat_run}/benchmarks/train/{chat_algorithm}_seed{chat_seed}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data $(dirname {input.data}) --sft {input.sft} --rm {input.rm}"
        " --algorithm {wildcards.chat_algorithm} --seed {wildcards.chat_seed}{params.prefs}"
        " --out $(dirname {output.run}) > {log} 2>&1"


rule chat_external:
    """A published model evaluated as it is (chat_eval.external_policies: Table 2's APA row)."""
    output:
        "results/{chat_run}/external/{label}/model.json",
    params:
        ref=lambda wc: json.dumps(_chat(wc)["chat_eval"]["external_policies"][wc.label]),
    log:
        "results/{chat_run}/logs/external/{label}.log",
    localrule: True
    conda:
        ENV
    shell:
        "printf '%s\\n' {params.ref:q} > {output} && cp {output} {log}"


rule chat_eval_sets:
    """The AlpacaEval instructions, MT-Bench questions and Arena-Hard questions every chat policy answers."""
    input:
        lambda wc: f"{chat_base(wc.chat_run)}/data/test.jsonl",
    output:
        "results/{chat_run}/chat/alpaca_instructions.json",
        "results/{chat_run}/chat/mt_bench_questions.jsonl",
        "results/{chat_run}/chat/arena_hard_questions.jsonl",
        "results/{chat_run}/chat/arena_hard_baseline.jsonl",
    params:
        settings=lambda wc: fingerprint([_chat(wc)["chat_eval"], _chat(wc)["data"]["seed"]]),
        cmd=lambda wc: chat_stage("chat-sets", wc),
    log:
        "results/{chat_run}/logs/chat_eval_sets.log",
    conda:
        ENV
    shell:
        "{params.cmd} --data $(dirname {input}) --out results/{wildcards.chat_run}/chat > {log} 2>&1"


rule chat_policy_eval:
    """One chat policy judged: AlpacaEval 2.0, MT-Bench and Arena-Hard."""
    input:
        data=lambda wc: f"{chat_base(wc.chat_run)}/data/test.jsonl",
        sets=rules.chat_eval_sets.output,
        policy=chat_policy_job,
    output:
        alpaca="results/{chat_run}/{chat_policy}/chat/alpaca_eval.json",
        mt_bench="results/{chat_run}/{chat_policy}/chat/mt_bench.json",
        arena_hard="results/{chat_run}/{chat_policy}/chat/arena_hard.json",
    params:
        settings=lambda wc: fingerprint([_chat(wc)["chat_eval"], _chat(wc)["eval"]["temperature"]]),
        cmd=lambda wc: chat_stage("chat-eval", wc),
        name=chat_policy_name,
        policy=chat_policy_ref,
    threads: 1
    resources:
        **HEAVY,
    log:
        "results/{chat_run}/logs/chat_eval/{chat_policy}.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data $(dirname {input.data}) --sets results/{wildcards.chat_run}/chat"
        " --policy {params.policy} --seed 0 --name {params.name} --out $(dirname {output.alpaca}) > {log} 2>&1"


rule chat_leaderboard:
    """The Open LLM Leaderboard v1 of one chat policy through lm-eval."""
    input:
        data=lambda wc: f"{chat_base(wc.chat_run)}/data/test.jsonl",
        policy=chat_policy_job,
    output:
        "results/{chat_run}/{chat_policy}/leaderboard.json",
    params:
        policy=chat_policy_ref,
        settings=lambda wc: fingerprint([_chat(wc)["eval"]["leaderboard"], _chat(wc)["data"]["seed"]]),
        cmd=lambda wc: chat_stage("leaderboard", wc),
    threads: 1
    resources:
        **HEAVY,
    log:
        "results/{chat_run}/logs/leaderboard/{chat_policy}.log",
    conda:
        ENV
    shell:
        "{params.cmd} --threads {threads} --data $(dirname {input.data}) --policy {params.policy}"
        " --out $(dirname {output}) > {log} 2>&1"


rule chat_table2:
    """Table 2 of the chat setting (eval/chat_tables.py), MT-Bench per category and Figure 7 (its radar chart)."""
    input:
        lambda wc: chat_report_inputs("table2"),
    output:
        csv="tables/table2.csv",
        md="tables/table2.md",
        html=report("tables/table2.html", caption="../report/table2.rst", category="Chat (Tables 2, 3)"),
        mt_bench="tables/mt_bench.csv",
        png=report("figures/fig7.png", caption="../report/fig7.rst", category="Chat (Tables 2, 3)"),
        pdf="figures/fig7.pdf",
    params:
        cmd=lambda wc: f"python -m rebel chat-table --config {CHAT_FILES['table2']}",
        results=lambda wc: f"{REPORT_ROOT}/{CHAT_CFG['table2']['name']}",
    log:
        "results/logs/table2.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md} --mt-bench-csv {output.mt_bench}"
        " --png {output.png} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"


rule chat_table3:
    """Table 3 of the chat setting (eval/chat_tables.py): REBEL's large-batch iterations and DPO on their pairs."""
    input:
        lambda wc: chat_report_inputs("table3"),
    output:
        csv="tables/table3.csv",
        md="tables/table3.md",
        html=report("tables/table3.html", caption="../report/table3.rst", category="Chat (Tables 2, 3)"),
        mt_bench="tables/table3_mt_bench.csv",
        png="figures/table3_mt_bench.png",
        pdf="figures/table3_mt_bench.pdf",
    params:
        cmd=lambda wc: f"python -m rebel chat-table --config {CHAT_FILES['table3']}",
        results=lambda wc: f"{REPORT_ROOT}/{CHAT_CFG['table3']['name']}",
    log:
        "results/logs/table3.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md} --mt-bench-csv {output.mt_bench}"
        " --png {output.png} > {log} 2>&1 && python -m eval.report_html {output.md} {output.html}"
