"""The engine matrix: every exported graph run on ONNX Runtime, the ONNX reference evaluator, OpenVINO (f32
precision hint) and OpenCV's DNN module, each output held to the fp32 parity bar against ONNX Runtime.

    .venv/bin/python benchmarks/engine_matrix.py [--artifacts demo/artifacts] [--batch 16]
        [--json docs/measurements/engines.json]

With `--artifacts` (default demo/artifacts when it exists) it judges that artifact's `.onnx` files; otherwise
it exports graphs of the demo's shapes (digits 8x8x1, WRN-10-2, discriminator WRN-28-5 body) with random
weights, the pipeline with its transformed images exposed, and also judges the pipeline as traced (before
the rewrites), which shows what the rewrites fix. An engine that is not installed is recorded as such.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from atld_deploy.export.engines import ENGINES, EngineResult, compare_engines, engine_version, format_engine_table, random_feeds


# the embedded digits' shape: what `make demo` exports
CLASSES, CHANNELS, SIZE = 10, 1, 8


def demo_source() -> str:
    """How the demo-shaped graphs are made, for the table and the measurement file."""
    from atld_deploy.config import make_config

    cfg = make_config("digits")
    return (f"demo-shaped graphs, random weights (digits {SIZE}x{SIZE}x{CHANNELS}, {cfg.arch.upper()}, "
            f"discriminator WRN-{cfg.d_depth}-{cfg.d_widen} body)")


def demo_graphs(out: Path) -> dict[str, Path]:
    """Demo-shaped graphs with random weights: every kind an export always writes (the catalogue's kinds with no
    export option), the pipeline with its transformed images exposed, rewritten; and the pipeline as traced."""
    import onnx
    import torch

    from atld_deploy.config import make_config
    from atld_deploy.export.rewrite import optimize_graph
    from atld_deploy.export.trace import example_input, export_onnx, graph_module
    from atld_deploy.graphs import GRAPHS
    from atld_deploy.imt import IMTConfig
    from atld_deploy.models import create_discriminator, create_model

    cfg = make_config("digits")
    torch.manual_seed(0)
    f = create_model(cfg.arch, CLASSES, in_channels=CHANNELS).eval()
    d = create_discriminator(CLASSES, cfg.d_depth, cfg.d_widen).eval()
    imt = IMTConfig(mode="plus", eps=cfg.eps)
    paths = {}
    for kind in (k for k in GRAPHS.values() if k.option is None):
        traced = out / f"{kind.key}.traced.onnx"
        export_onnx(graph_module(kind, f, d, imt), example_input(kind, CLASSES, CHANNELS, SIZE), kind.input.name,
                    [t.name for t in kind.traced], traced, 18)
        model = onnx.load(str(traced))
        optimize_graph(model)
        onnx.save(model, str(out / f"{kind.key}.onnx"))
        paths[kind.key] = out / f"{kind.key}.onnx"
    paths["pipeline, as traced (no rewrites)"] = out / "pipeline.traced.onnx"
    return paths


def matrix(graphs: dict[str, Path], batch: int) -> dict[str, Any]:
    """{graph: {engine: result}} for every graph and engine, printed as a table."""
    results: dict[str, list[EngineResult]] = {k: compare_engines(p, random_feeds(p, batch), ENGINES) for k, p in graphs.items()}
    print(format_engine_table(results))
    return {key: {r.engine: {"passed": r.passed, "max_abs_err": r.max_abs_err, "failures": r.failures, "skipped": r.skipped}
                  for r in rows} for key, rows in results.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", help="also write the matrix to this measurement file")
    args = ap.parse_args()
    art = args.artifacts or (Path("demo/artifacts") if Path("demo/artifacts/manifest.json").exists() else None)
    versions = {e: engine_version(e) for e in ENGINES}
    print("engines: " + ", ".join(f"{e} {v or 'not installed'}" for e, v in versions.items()))
    with tempfile.TemporaryDirectory(prefix="engine_matrix_") as tmp:
        if art is not None:
            from atld_deploy.artifact import Manifest

            source = f"artifact {art}"
            graphs = {key: art / g.file for key, g in sorted(Manifest.load(art).graphs.items())}
        else:
            source = demo_source()
            graphs = demo_graphs(Path(tmp))
        print(f"graphs: {source}; batch {args.batch}")
        table = matrix(graphs, args.batch)
    if args.json:
        from atld_deploy.export.parity import THRESHOLDS
        from atld_deploy.measure import write_measurement

        write_measurement(args.json, "python " + " ".join(sys.argv), {
            "source": source, "batch": args.batch, "engine_versions": versions,
            "bar": f"max |err| <= {THRESHOLDS['fp32'].abs_err} x max(1, max |ONNX Runtime output|), same shape",
            "matrix": table})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
