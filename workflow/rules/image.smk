# The image setting (paper §5.3; docs/image-generation.md): its own config (config key image_config), a
# pre-trained LCM pipeline, every algorithm and seed through the shared loop, then Figures 3 and 4 and
# tables/image.csv from the runs' curve.jsonl and run.json (also from a cached result set: render_from).
from rebel.config import read_config_file, validate_image
from rebel.paths import REPO_ROOT

# Relative to the repository (as the pinned checkpoints' paths), whatever Snakemake's working directory.
IMAGE_CONFIG = str(REPO_ROOT / config["image_config"])
try:
    IMAGE = validate_image(read_config_file(IMAGE_CONFIG), IMAGE_CONFIG, resolve=False)
except ConfigError as exc:
    sys.exit(f"config error: {exc}")
IMAGE_RUN = f"results/{IMAGE['name']}"
IMAGE_REPORT = f"{REPORT_ROOT}/{IMAGE['name']}"
IMAGE_STAGE = f"python -m rebel {{stage}} --config {IMAGE_CONFIG}"
IMAGE_LCM = f"{IMAGE_RUN}/lcm/model.json"
IMAGE_TARGETS = ["tables/image.csv", "figures/fig3.png", "figures/fig4.png"]  # rule image_report; also in `render`


rule image_data:
    """The prompts (the 45 of appendix H.3.1, or the embedded task's)."""
    output:
        f"{IMAGE_RUN}/data/prompts.jsonl",
    params:
        cmd=IMAGE_STAGE.format(stage="image-data"),
        prompts=fingerprint(IMAGE["data"]),
    log:
        f"{IMAGE_RUN}/logs/data.log",
    conda:
        ENV
    shell:
        "{params.cmd} --out $(dirname {output}) > {log} 2>&1"


rule image_pretrain:
    """The starting policy: the tiny LCM built and pre-trained here, or a reference to the configured pipeline."""
    input:
        f"{IMAGE_RUN}/data/prompts.jsonl",
    output:
        IMAGE_LCM,
    params:
        cmd=IMAGE_STAGE.format(stage="image-pretrain"),
        model=fingerprint([IMAGE["model"], IMAGE["pretrain"], IMAGE["sampling"]["guidance_scale"]]),
    threads: (IMAGE["pretrain"] or {}).get("threads", 1)
    resources:
        **HEAVY,
    log:
        f"{IMAGE_RUN}/logs/pretrain.log",
    benchmark:
        f"{IMAGE_RUN}/benchmarks/pretrain.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --data $(dirname {input}) --out $(dirname {output}) > {log} 2>&1"


rule image_train:
    """One algorithm and seed: the shared loop on diffusion trajectories, with Figure 3's curve points."""
    input:
        data=f"{IMAGE_RUN}/data/prompts.jsonl",
        lcm=IMAGE_LCM,
    output:
        curve=f"{IMAGE_RUN}/{{image_algorithm}}/seed{{image_seed}}/curve.jsonl",
        run=f"{IMAGE_RUN}/{{image_algorithm}}/seed{{image_seed}}/run.json",
    params:
        cmd=IMAGE_STAGE.format(stage="image-train"),
        settings=lambda wc: fingerprint([IMAGE[k] for k in ("sampling", "reward", "reward_normalization", "policy",
                                                            "eval", "variants")]
                                        + [IMAGE["policy_overrides"].get(wc.image_algorithm),
                                           IMAGE["algorithm_params"].get(wc.image_algorithm)]),
    threads: 1
    resources:
        **HEAVY,
    log:
        f"{IMAGE_RUN}/logs/{{image_algorithm}}_seed{{image_seed}}.log",
    benchmark:
        f"{IMAGE_RUN}/benchmarks/{{image_algorithm}}_seed{{image_seed}}.tsv"
    conda:
        ENV
    shell:
        "{params.cmd} --data $(dirname {input.data}) --lcm {input.lcm} --algorithm {wildcards.image_algorithm}"
        " --seed {wildcards.image_seed} --out $(dirname {output.curve}) > {log} 2>&1"


rule image_report:
    """Figures 3 and 4 and tables/image.csv (eval/image_report.py)."""
    input:
        expand(f"{IMAGE_REPORT}/{{image_algorithm}}/seed{{image_seed}}/{{name}}",
               image_algorithm=IMAGE["algorithms"], image_seed=IMAGE["seeds"], name=["curve.jsonl", "run.json"]),
    output:
        csv="tables/image.csv",
        md="tables/image.md",
        fig3=report("figures/fig3.png", caption="../report/fig3.rst", category="Image generation"),
        fig3_csv="figures/fig3.csv",
        fig3_pdf="figures/fig3.pdf",
        fig4=report("figures/fig4.png", caption="../report/fig4.rst", category="Image generation"),
        fig4_pdf="figures/fig4.pdf",
    params:
        cmd=IMAGE_STAGE.format(stage="image-report"),
        results=folder_above(3),
    log:
        f"{IMAGE_RUN}/logs/report.log",
    conda:
        ENV
    shell:
        "{params.cmd} --results {params.results} --csv {output.csv} --md {output.md} --fig3 {output.fig3}"
        " --fig4 {output.fig4} > {log} 2>&1"
