"""Run configurations: load a YAML file, validate it against the schema, fail in one line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from rebel.errors import ConfigError
from rebel.paths import CONFIG_DIR, DEFAULT_CONFIG, IMAGE_SCHEMA_PATH, SCHEMA_PATH


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = _key_path(error)
        prefix = "" if where == "<top level>" else where + "."
        return f"unknown key '{prefix}{extra[0]}'; allowed keys here: {', '.join(allowed)}"
    if error.validator == "required":
        return f"key '{_key_path(error)}' is missing {error.message.split()[0]}"
    if error.validator == "oneOf" and error.context:
        # Report the alternative that came closest, not "is not valid under any": one whose
        # discriminating constant matched, then the fewest errors, then the deepest.
        by_alternative: dict[int, list[jsonschema.ValidationError]] = {}
        for sub in error.context:
            by_alternative.setdefault(sub.relative_schema_path[0], []).append(sub)
        closest = min(
            by_alternative.values(),
            key=lambda errs: (
                any(e.validator == "const" for e in errs),
                len(errs),
                -max(len(e.absolute_path) for e in errs),
            ),
        )
        return _describe(max(closest, key=lambda e: len(e.absolute_path)))
    return f"key '{_key_path(error)}': {error.message}"


def _non_finite(node: Any, path: tuple = ()) -> tuple[tuple, float] | None:
    """The key path and value of the first NaN or infinity in ``node`` (JSON-schema number checks let them
    through: NaN compares false with every bound)."""
    if isinstance(node, float) and not math.isfinite(node):
        return path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _non_finite(value, (*path, key))
        if found is not None:
            return found
    return None


def _check_consistency(config: dict[str, Any], source: str) -> None:
    """Bounds between keys that the schema cannot express: minibatches within an iteration's prompts,
    evaluation subsets within their synthetic splits."""
    for where, values in [
        ("policy", config["policy"]),
        *((f"policy_overrides.{name}", o) for name, o in config["policy_overrides"].items()),
    ]:
        minibatch, total = values.get("minibatch_prompts"), config["policy"]["prompts_per_iteration"]
        if minibatch is not None and minibatch > total:
            raise ConfigError(
                f"{source}: key '{where}.minibatch_prompts': {minibatch} is more than "
                f"policy.prompts_per_iteration ({total}); allowed: 1 to {total}"
            )
    pol = config["policy"]
    if pol["lora"] is not None and pol.get("train_top_layers") is not None:
        raise ConfigError(
            f"{source}: key 'policy.train_top_layers': {pol['train_top_layers']} with policy.lora set; "
            "train either LoRA adapters or the top layers (set one of them to null)"
        )
    pairs = config.get("offline_pairs")
    if pairs is not None:
        if pairs["algorithm"] not in config["algorithms"]:
            raise ConfigError(
                f"{source}: key 'offline_pairs.algorithm': '{pairs['algorithm']}' is not in 'algorithms' "
                f"({', '.join(config['algorithms'])})"
            )
        if not pol.get("save_pairs") or pairs["iteration"] > pol["iterations"]:
            raise ConfigError(
                f"{source}: key 'offline_pairs': the pairs of iteration {pairs['iteration']} are recorded only with "
                f"policy.save_pairs true and policy.iterations >= {pairs['iteration']}"
            )
    if config["data"]["source"] == "synthetic":
        synthetic = config["data"]["synthetic"]
        for key, n, split in [
            ("eval.n_prompts", config["eval"]["n_prompts"], "n_test"),
            ("eval.curve.n_prompts", config["eval"]["curve"]["n_prompts"], "n_val"),
        ]:
            if n > synthetic[split]:
                raise ConfigError(
                    f"{source}: key '{key}': {n} is more than the {synthetic[split]} prompts of the "
                    f"split (data.synthetic.{split}); allowed: 1 to {synthetic[split]}"
                )


def validate(config: dict[str, Any], source: str = "config", *, resolve: bool = True) -> dict[str, Any]:
    """Check ``config`` against the schema and the algorithm registry; return it unchanged. With ``resolve``
    False (the Snakefile's parse) algorithm names are looked up without importing any (no torch); the
    algorithms' parameters are then checked by every job, the first of which (data) runs before training."""
    _check_schema(config, SCHEMA_PATH, source)
    if config["eval"]["judge"]["type"] == "gold" and config["data"]["source"] != "synthetic":
        raise ConfigError(
            f"{source}: key 'eval.judge.type': 'gold' needs data.source 'synthetic' (it knows only the embedded task)"
        )
    _check_consistency(config, source)
    if resolve:
        _check_algorithms(config, source)
    else:
        from rebel.registry import AlgorithmNotFound, algorithm_spec

        for name in config["algorithms"]:
            try:
                algorithm_spec(name, config["variants"])
            except AlgorithmNotFound as exc:
                raise ConfigError(f"{source}: key 'algorithms': {exc}") from None
    _check_named_algorithms(config, source)
    if config["search"]["seed"] in config["seeds"]:
        raise ConfigError(
            f"{source}: key 'search.seed': {config['search']['seed']} is one of 'seeds'; the "
            "search must not select on the reported runs"
        )
    return config


def _check_schema(config: dict[str, Any], schema_path: Path, source: str) -> None:
    """No NaN or infinity anywhere, then the schema at ``schema_path``: the most relevant error in one line."""
    found = _non_finite(config)
    if found is not None:
        key = ".".join(map(str, found[0]))
        raise ConfigError(f"{source}: key '{key}': expected a finite number, got {found[1]}")
    validator = jsonschema.Draft202012Validator(yaml.safe_load(schema_path.read_text()))
    errors = list(validator.iter_errors(config))
    if errors:
        # The most relevant error, without jsonschema's own descent into oneOf (handled in _describe).
        error = max(errors, key=jsonschema.exceptions.relevance)
        raise ConfigError(f"{source}: {_describe(error)}")


def _check_named_algorithms(config: dict[str, Any], source: str) -> None:
    """``algorithm_params`` and ``policy_overrides`` name only algorithms of ``algorithms``."""
    for section in ("algorithm_params", "policy_overrides"):
        for name in config[section]:
            if name not in config["algorithms"]:
                raise ConfigError(
                    f"{source}: key '{section}.{name}' names an algorithm not in "
                    f"'algorithms' ({', '.join(config['algorithms'])})"
                )


def _build_checked(name: str, values: dict[str, Any], names_key: str, params_key: str, source: str):
    """The algorithm ``name`` built from ``values`` (:func:`rebel.algorithms.build_algorithm`), its errors as
    one-line config errors naming ``names_key`` (an unknown name) or ``params_key`` (its parameters)."""
    from rebel.algorithms import AlgorithmNotFound, build_algorithm
    from rebel.algorithms.base import ParamTypeError

    try:
        return build_algorithm(name, values)
    except AlgorithmNotFound as exc:
        raise ConfigError(f"{source}: key '{names_key}': {exc}") from None
    except ParamTypeError as exc:
        raise ConfigError(f"{source}: key '{params_key}.{exc.field}': {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: key '{params_key}': {exc}") from None


def _check_algorithms(config: dict[str, Any], source: str) -> None:
    """Every variant of ``config`` builds from its own parameters, every algorithm resolves to its class and
    builds from its variant's parameters updated by its ``algorithm_params``, and Figure 5's are online."""
    for name in config["variants"]:
        _build_checked(name, {"variants": config["variants"]}, f"variants.{name}", f"variants.{name}", source)
    built = {
        name: _build_checked(name, config, "algorithms", f"algorithm_params.{name}", source)
        for name in config["algorithms"]
    }
    online = [name for name, algorithm in built.items() if not algorithm.offline]
    for name in config["figures"]["fig5"]:
        if name not in online:
            raise ConfigError(
                f"{source}: key 'figures.fig5': '{name}' is not one of the online algorithms of "
                f"'algorithms' ({', '.join(online)})"
            )


def policy_settings(config: dict[str, Any], algorithm: str) -> dict[str, Any]:
    """The config as one algorithm's run sees it: ``policy`` updated by ``policy_overrides.<algorithm>``."""
    return config | {"policy": config["policy"] | config["policy_overrides"].get(algorithm, {})}


def merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``delta``: mappings merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in delta.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping, unvalidated, with ``extends: <file>`` resolved: the named file (relative to
    this one's folder), itself read the same way, updated by this file's keys (:func:`merge`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file '{path}' not found; shipped configs: "
            f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))}"
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "a config file must be saved as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    parent = config.pop("extends", None)
    if parent is None:
        return config
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: key 'extends': expected the path of a config file, got {parent!r}")
    base = (path.parent / parent).resolve()
    chain = (*_seen, path.resolve())
    if base in chain:
        cycle = " -> ".join(p.name for p in (*chain[chain.index(base) :], base))
        raise ConfigError(f"{path}: key 'extends': '{parent}' makes a cycle ({cycle})")
    if not base.is_file():
        raise ConfigError(f"{path}: key 'extends': file '{base}' not found (relative to {path.parent})")
    return merge(read_config_file(base, chain), config)


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _typed(value: str) -> Any:
    """A ``--config key=value`` value as a config file would give it: Snakemake reads nested values as strings
    (sft='{pretrained: null}' would pin the path 'null'), so they are read again as YAML, with 1e-3 a number as
    in the configs (YAML 1.1 alone would keep it a string)."""

    def numbers(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: numbers(v) for k, v in node.items()}
        if isinstance(node, list):
            return [numbers(v) for v in node]
        return float(node) if isinstance(node, str) and _EXPONENT.fullmatch(node) else node

    try:
        return numbers(yaml.safe_load(value))
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config value '{value}' is not valid YAML ({str(exc).splitlines()[0]})") from None


def effective_config(files: list[str | Path] | None, overrides: list[str] | None) -> dict[str, Any]:
    """The config a Snakemake run uses, unvalidated: its ``--configfile`` files in order (the embedded default
    when none), each with its ``extends`` resolved, updated by its ``--config key=value`` overrides."""
    config: dict[str, Any] = {}
    for path in files or [DEFAULT_CONFIG]:
        config = merge(config, read_config_file(path))
    for override in overrides or []:
        key, _, value = override.partition("=")
        config = merge(config, {key: _typed(value)})
    return config


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Load a config file (the embedded config when ``path`` is None), resolve ``extends`` and validate it."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    return validate(read_config_file(path), str(path))


def dump_config(config: dict[str, Any], path: Path) -> None:
    """Write ``config`` as YAML, top-level keys in the schema's order, leaving the file untouched when its content
    is the same."""
    order = {key: i for i, key in enumerate(yaml.safe_load(SCHEMA_PATH.read_text())["properties"])}
    text = yaml.safe_dump(
        dict(sorted(config.items(), key=lambda item: order.get(item[0], len(order)))), sort_keys=False
    )
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def fingerprint(obj: Any) -> str:
    """Stable JSON text of a config section (used as a Snakemake param to trigger reruns)."""
    return json.dumps(obj, sort_keys=True)


def validate_image(config: dict[str, Any], source: str = "image config", *, resolve: bool = True) -> dict[str, Any]:
    """Check an image-setting config (paper §5.3; ``workflow/schemas/image.schema.yaml``) and its algorithms;
    return it unchanged. With ``resolve`` (not at the Snakefile's parse) the algorithms are built, and each
    must have an image form of its rollout source (:meth:`rebel.sources.RolloutSource.for_setting`)."""
    _check_schema(config, IMAGE_SCHEMA_PATH, source)
    if (config["model"]["pretrained"] is None) != (config["pretrain"] is not None) or (
        config["model"]["pretrained"] is None and config["model"]["scratch"] is None
    ):
        raise ConfigError(
            f"{source}: key 'model.pretrained': null needs model.scratch and pretrain (the pipeline is built and "
            "pre-trained here); a pretrained pipeline needs pretrain: null"
        )
    _check_named_algorithms(config, source)
    for name in config["figure4"]["algorithms"]:
        if name not in config["algorithms"]:
            raise ConfigError(f"{source}: key 'figure4.algorithms': '{name}' is not in 'algorithms'")
    norm = config["reward_normalization"]
    if norm["min_count"] > norm["buffer_size"]:
        raise ConfigError(
            f"{source}: key 'reward_normalization.min_count': more than buffer_size ({norm['buffer_size']})"
        )
    for name in config["algorithms"]:
        pol = policy_settings(config, name)["policy"]
        if pol["minibatch_prompts"] > pol["prompts_per_iteration"]:
            raise ConfigError(
                f"{source}: key 'policy_overrides.{name}.minibatch_prompts': {pol['minibatch_prompts']} is more than "
                f"its prompts_per_iteration ({pol['prompts_per_iteration']})"
            )
    if resolve:
        for name in config["algorithms"]:
            algorithm = _build_checked(name, config, "algorithms", f"algorithm_params.{name}", source)
            try:
                algorithm.source.for_setting("image")
            except ConfigError as exc:
                raise ConfigError(f"{source}: key 'algorithms': '{name}': {exc}") from None
    return config


def load_image_config(path: str | Path) -> dict[str, Any]:
    """Load an image-setting config file (``extends`` resolved) and validate it (:func:`validate_image`)."""
    return validate_image(read_config_file(path), str(path))
