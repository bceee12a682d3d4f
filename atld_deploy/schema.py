"""The published JSON Schemas of the two files other stages trust: an artifact's `manifest.json` and a run's
`config.json`, with upper bounds on everything that sizes an allocation.

Both are validated before anything is built from them, so a hostile or damaged file is one line (exit 2), never
a traceback or a 256 GB allocation. `atld-deploy schema manifest|run-config` prints them; the copies in
docs/schemas/ are that output (a test keeps them equal).
"""

from __future__ import annotations

from typing import Any

from .errors import AtldError
from .names import NAME_PATTERN

# Upper bounds. Generous for real models (ImageNet-21k has 21,841 classes; WRN-106-32 is far past the paper's
# WRN-34-20), far below what exhausts a machine.
LIMITS: dict[str, int] = {
    "image_size": 1024,  # pixels per side the graphs take
    "classes": 100_000,
    "class_name_chars": 256,
    "max_batch": 65_536,
    "depth": 106,  # WRN depth D (6n+4) and the discriminator's
    "widen": 32,
    "epochs": 100_000,
    "batch_size": 65_536,
    "iters": 1_000,  # D iterations, PGD steps, Sinkhorn iterations per step
    "eval_pgd_n": 1_000_000,
}

# a plain file name inside the artifact: no separators, no `.`/`..`, no control characters. Patterns forbid with a
# lookahead over the whole string, since Python's `$` also matches before a final newline (and stay ECMA-262).
_NAME = {"type": "string", "minLength": 1, "maxLength": 255,
         "pattern": r"^(?![\s\S]*[/\\\x00-\x1f\x7f])(?!\.\.?$)[\s\S]+$"}
_SHA = {"type": "string", "pattern": r"^(?![\s\S]*\n)[0-9a-f]{64}$"}
_DIM = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": LIMITS["max_batch"] * LIMITS["image_size"]},
                  {"const": "batch"}]}
_TENSOR = {
    "type": "object", "required": ["name", "dtype", "shape", "meaning"],
    "properties": {"name": {"type": "string", "pattern": r"^(?![\s\S]*\n)[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                   "dtype": {"enum": ["float32", "float16", "uint8"]},
                   "shape": {"type": "array", "minItems": 1, "maxItems": 4, "items": _DIM},
                   "meaning": {"type": "string", "maxLength": 1000}},
}
_GRAPH = {
    "type": "object", "required": ["file", "inputs", "outputs", "sha256"],
    "properties": {"file": _NAME, "sha256": _SHA, "precision": {"enum": ["fp32", "fp16"]},
                   "inputs": {"type": "array", "minItems": 1, "maxItems": 4, "items": _TENSOR},
                   "outputs": {"type": "array", "minItems": 1, "maxItems": 8, "items": _TENSOR}},
}
_BATCH = {"type": "integer", "minimum": 1, "maximum": LIMITS["max_batch"]}
_ENGINE = {
    "type": "object",
    "required": ["file", "source_graph", "precision", "sidecar", "sha256", "sidecar_sha256", "min_batch", "opt_batch",
                 "max_batch"],
    "properties": {"file": _NAME, "sidecar": _NAME, "sha256": _SHA, "sidecar_sha256": _SHA,
                   "source_graph": {"type": "string"}, "precision": {"enum": ["fp32", "fp16"]},
                   "min_batch": _BATCH, "opt_batch": _BATCH, "max_batch": _BATCH},
}

_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_MODE_NAMES = {"enum": ["static", "imt", "imt-plus"]}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 100_000_000}
# written by `atld-deploy card`; the runtime reads the temperatures, the threshold and the worst cases
_CALIBRATION = {"type": "object", "required": ["temperature"],
                "properties": {"temperature": {"type": "object", "propertyNames": _MODE_NAMES,
                                               "additionalProperties": {"type": "number", "minimum": 0.01,
                                                                        "maximum": 100}}}}
_DETECTOR = {"type": "object", "required": ["threshold", "fpr"],
             "properties": {"threshold": _PROB, "fpr": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                            "n_fit": _COUNT}}
_CARD = {"type": "object", "required": ["n", "modes"],
         "properties": {"n": {**_COUNT, "minimum": 1}, "eps": _PROB, "seed": {"type": "integer"},
                        "modes": {"type": "object", "minProperties": 1, "propertyNames": _MODE_NAMES,
                                  "additionalProperties": {"type": "object", "required": ["worst_case"],
                                                           "properties": {"worst_case": _PROB, "clean": _PROB}}}}}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "atld-deploy/manifest-3.schema.json",
    "title": "atld-deploy artifact manifest, format 3",
    "type": "object",
    "required": ["format", "format_version", "classes", "input", "imt", "graphs", "engines", "verified", "run_files"],
    "properties": {
        "format": {"const": "atld-deploy/artifact"},
        "format_version": {"const": 3},
        "classes": {"type": "array", "minItems": 2, "maxItems": LIMITS["classes"],
                    "items": {"type": "string", "minLength": 1, "maxLength": LIMITS["class_name_chars"],
                              "pattern": NAME_PATTERN}},
        "input": {
            "type": "object", "required": ["name", "dtype", "layout", "shape", "channels", "size", "range"],
            "properties": {"channels": {"enum": [1, 3]},
                           "size": {"type": "integer", "minimum": 1, "maximum": LIMITS["image_size"]},
                           "dtype": {"const": "float32"}, "layout": {"const": "NCHW"},
                           "shape": {"type": "array", "minItems": 4, "maxItems": 4, "items": _DIM}},
        },
        "imt": {"type": "object", "required": ["mode", "eps"],
                "properties": {"mode": {"enum": ["off", "plain", "plus"]},
                               "eps": {"type": "number", "minimum": 0, "maximum": 1}}},
        "graphs": {"type": "object", "minProperties": 1, "maxProperties": 16,
                   "propertyNames": {"pattern": r"^(?![\s\S]*\n)[a-z0-9_]{1,32}$"}, "additionalProperties": _GRAPH},
        "engines": {"type": "object", "maxProperties": 16, "additionalProperties": _ENGINE},
        "verified": {"type": "boolean"},
        "producer": {"type": "object"},
        "run": {"type": "object"},
        "run_files": {"type": "object", "propertyNames": _NAME, "additionalProperties": _SHA},
        "files": {"type": "object", "maxProperties": 16, "propertyNames": _NAME, "additionalProperties": _SHA},
        "calibration": _CALIBRATION,
        "detector": _DETECTOR,
        "card": _CARD,
    },
}

_POS_INT = {"type": "integer", "minimum": 1}
RUN_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "atld-deploy/run-config-1.schema.json",
    "title": "atld-deploy run config.json, format 1",
    "type": "object",
    "required": ["format", "config", "data"],
    "properties": {
        "kind": {"const": "atld-deploy/run"},
        "format": {"const": 1},
        "data": {"type": "object", "required": ["channels", "size", "num_classes"],
                 "properties": {"channels": {"enum": [1, 3]},
                                "size": {**_POS_INT, "maximum": LIMITS["image_size"]},
                                "num_classes": {"type": "integer", "minimum": 2, "maximum": LIMITS["classes"]}}},
        "config": {
            "type": "object",
            "properties": {
                "arch": {"type": "string", "pattern": r"^(?![\s\S]*\n)wrn-[0-9]{1,3}-[0-9]{1,2}$"},
                "image_size": {**_POS_INT, "maximum": LIMITS["image_size"]},
                "epochs": {**_POS_INT, "maximum": LIMITS["epochs"]},
                "batch_size": {**_POS_INT, "maximum": LIMITS["batch_size"]},
                "d_depth": {**_POS_INT, "maximum": LIMITS["depth"]},
                "d_widen": {**_POS_INT, "maximum": LIMITS["widen"]},
                "d_iters": {**_POS_INT, "maximum": LIMITS["iters"]},
                "pgd_steps": {**_POS_INT, "maximum": LIMITS["iters"]},
                "ot_iters": {**_POS_INT, "maximum": LIMITS["iters"]},
                "eval_pgd_n": {"type": "integer", "minimum": 0, "maximum": LIMITS["eval_pgd_n"]},
                "eps": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
    },
}

SCHEMAS = {"manifest": MANIFEST_SCHEMA, "run-config": RUN_CONFIG_SCHEMA}


def validate(obj: Any, schema: dict[str, Any], where: object, error: type[AtldError], hint: str) -> None:
    """Raise `error` with one line naming the first violation of `schema` in `obj` (at `where`)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    try:
        problem = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    except RecursionError:
        raise error(f"{where} is nested too deeply to be an atld-deploy file; {hint}") from None
    if problem is None:
        return
    at = "/".join(str(p) for p in problem.absolute_path) or "(top level)"
    message = problem.message if len(problem.message) <= 200 else problem.message[:200] + "..."
    raise error(f"{where}: {at}: {message}; {hint}")


def check_arch_bounds(arch: str, where: object, error: type[AtldError]) -> None:
    """The classifier's depth and width within LIMITS (the schema bounds their digits only)."""
    parts = arch.split("-")
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        depth, widen = int(parts[1]), int(parts[2])
        if depth > LIMITS["depth"] or widen > LIMITS["widen"]:
            raise error(f"{where}: arch {arch!r} is beyond the supported wrn-{LIMITS['depth']}-{LIMITS['widen']}")
