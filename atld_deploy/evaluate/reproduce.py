"""`atld-deploy reproduce`: train the paper's comparison on the embedded digits with equal budgets, evaluate
every model under the published and adaptive protocols, and write docs/REPRODUCTION.md from what ran.

Every stage is resumable: training continues from each run's checkpoint (the Trainer's `resume=`), and an
evaluation whose settings match a saved `eval.json` is not repeated.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..io import write_bytes_atomic, write_json_atomic
from .api import evaluate_run, machine_info
from .report import EvalReport, format_markdown
from .reproduce_text import claims_section, recipe_section, table1

log = logging.getLogger(__name__)

METHODS = ("standard", "pgd-at", "feature-scattering", "atld")
REPRO_ATTACKS = ("clean", "fgsm", "pgd20", "cw20", "square", "pgd20-smooth", "pgd20-imtloss")


@dataclass(frozen=True)
class ReproSettings:
    """One reproduction: the shared training budget and the evaluation settings."""

    workdir: Path = Path("runs/reproduce")
    epochs: int = 15
    n: int = 300
    seed: int = 0
    arch: str = "wrn-10-1"
    d_depth: int = 10
    d_widen: int = 2
    batch_size: int = 50
    attacks: tuple[str, ...] = REPRO_ATTACKS
    square_queries: int = 300
    seeds: int = 1  # seeds seed, seed+1, ...; the report gives each figure's spread over them

    def for_seed(self, i: int) -> "ReproSettings":
        """The settings of the i-th seed: seed + i, its runs under workdir/seed-<seed> (the first keeps workdir)."""
        from dataclasses import replace

        return self if i == 0 else replace(self, seed=self.seed + i, workdir=self.workdir / f"seed-{self.seed + i}")


@dataclass
class MethodResult:
    method: str
    run_dir: Path
    train_seconds: float
    eval_seconds: float
    report: EvalReport
    train_summary: dict[str, Any] = field(default_factory=dict)


def _train(method: str, s: ReproSettings, echo: Callable[[str], None]) -> tuple[Path, float]:
    from ..config import make_config
    from ..run import read_run_meta
    from ..train import Trainer

    cfg = make_config("digits", method=method, arch=s.arch, epochs=s.epochs, batch_size=s.batch_size, seed=s.seed,
                      d_depth=s.d_depth, d_widen=s.d_widen)
    out = s.workdir / method
    resume = (out / "checkpoint.pt").exists()
    if resume:
        stored, _, _ = read_run_meta(out)
        for key in ("arch", "seed", "batch_size", "d_depth", "d_widen", "method"):
            if getattr(stored, key) != getattr(cfg, key):
                raise ConfigError(f"{out} holds a run with {key}={getattr(stored, key)!r}, this reproduction asks for "
                                  f"{getattr(cfg, key)!r}; use another --workdir or delete {out}")
    t0 = time.perf_counter()
    echo(f"[train] {method}: {s.arch}, {s.epochs} epochs, batch {s.batch_size}, eps {cfg.eps}, seed {s.seed}"
         + (" (resuming)" if resume else ""))
    Trainer(cfg, out, resume=resume, progress=False).fit()
    return out, time.perf_counter() - t0


def _evaluate(method: str, run_dir: Path, s: ReproSettings, echo: Callable[[str], None]) -> tuple[EvalReport, float]:
    cache = run_dir / "eval.json"
    models = "static,imt,imt+" if method == "atld" else "static"
    key = {"attacks": list(s.attacks), "models": models, "n": s.n, "seed": s.seed, "square_queries": s.square_queries,
           "weights_mtime": (run_dir / "classifier.safetensors").stat().st_mtime}
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            echo(f"[eval] {method}: settings unchanged, reusing {cache}")
            rep = EvalReport(saved["records"], saved["warnings"], saved["meta"])
            return rep, float(saved["meta"]["seconds"])
    echo(f"[eval] {method}: models {models}, attacks {','.join(s.attacks)}, n {s.n}")
    t0 = time.perf_counter()
    rep = evaluate_run(run_dir, attacks=s.attacks, models=models, protocols="published,adaptive,worst-case", n=s.n,
                       seed=s.seed, square_queries=s.square_queries)
    write_json_atomic(cache, {"key": key, "records": rep.records, "warnings": rep.warnings, "meta": rep.meta})
    return rep, time.perf_counter() - t0


def reproduce(settings: ReproSettings, out: Path, echo: Callable[[str], None] = print,
              command: str | None = None) -> list[MethodResult]:
    """Train and evaluate every method, then write the report to `out` (atomically).

    Returns:
        one `MethodResult` per method, in `METHODS` order.
    """
    t_all = time.perf_counter()
    if settings.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {settings.seeds}")
    per_seed = []
    for i in range(settings.seeds):
        s = settings.for_seed(i)
        results = []
        for method in METHODS:
            run_dir, _ = _train(method, s, echo)
            # the run's own training time (its epochs' seconds), not this invocation's: a resumed run keeps its time
            train_s = sum(json.loads(l)["seconds"] for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip())
            rep, eval_s = _evaluate(method, run_dir, s, echo)
            summary = json.loads((run_dir / "summary.json").read_text())
            results.append(MethodResult(method, run_dir, train_s, eval_s, rep, summary))
            echo(f"        {method} (seed {s.seed}): trained in {train_s:.0f} s, evaluated in {eval_s:.0f} s")
        per_seed.append(results)
    results = per_seed[0]
    total = time.perf_counter() - t_all
    cmd = command or "atld-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = render(results, settings, cmd, total, per_seed)
    write_bytes_atomic(out, text.encode())
    echo(table1(results))
    echo(f"wrote {out} ({len(text)} characters) in {total:.0f} s")
    return results


def spread_section(per_seed: list[list[MethodResult]]) -> list[str]:
    """Each worst-case and published figure of the Table 1 analogue as mean, min and max over the seeds."""
    seeds = [r[0].report.meta.get("seed") for r in per_seed]
    lines = ["", f"## Spread over {len(per_seed)} seed(s): {', '.join(str(x) for x in seeds)}", "",
             "Accuracy %, mean [min-max] over the seeds (each seed trains and evaluates every method afresh).", "",
             "| method | model | protocol | attack | mean [min-max] |", "|---|---|---|---|---|"]
    first = per_seed[0]
    for i, r in enumerate(first):
        for rec in r.report.records:
            if rec["protocol"] == "adaptive" and rec["model"] == "static":
                continue
            vals = [seed[i].report.accuracy(rec["model"], rec["attack"], rec["protocol"]) for seed in per_seed]
            vals = [v for v in vals if v is not None]
            if not vals:
                continue
            lines.append(f"| {r.method} | {rec['model']} | {rec['protocol']} | {rec['attack']} | "
                         f"{100 * sum(vals) / len(vals):.1f} [{100 * min(vals):.1f}-{100 * max(vals):.1f}] |")
    return lines


def render(results: list[MethodResult], s: ReproSettings, command: str, total_seconds: float,
           per_seed: list[list[MethodResult]] | None = None) -> str:
    """The whole REPRODUCTION.md (`per_seed`: every seed's results, the first being `results`)."""
    from ..measure import machine
    from ..run import read_run_meta

    m, box = machine_info(), machine()
    cfg = read_run_meta(results[0].run_dir)[0]  # every method shares these settings (equal budgets)
    milestones = cfg.lr_milestones
    lines = [
        "# Reproducing ATLD's comparison at small scale (embedded digits)",
        "",
        "Generated by `atld-deploy reproduce` -- do not edit by hand; rerun the command instead. Every number below",
        "is what that command printed on the machine named here.",
        "",
        "## How this was produced",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: {box['cpu']}, {box['cores']} CPU(s), {m['platform']}, torch {m['torch']}, {m['threads']} "
        f"thread(s); load average when the report was written {', '.join(str(v) for v in box['loadavg'])}.",
        f"- Data: {cfg.dataset} ({results[0].report.meta.get('n', s.n)} test examples evaluated), eps = {cfg.eps:g} in "
        f"[0,1] pixels.",
        f"- Equal budgets: every method trains {cfg.arch} for {cfg.epochs} epochs, batch {cfg.batch_size}, SGD lr {cfg.lr:g} "
        f"(x0.1 after epochs {' and '.join(str(m) for m in milestones)}: the preset's fractions of the run), "
        f"seed {s.seed}. ATLD's discriminator: depth {s.d_depth}, widen {s.d_widen}.",
        f"- Seeds: {len(per_seed or [results])} (training and evaluation seed {s.seed}"
        f"{f' to {s.seed + len(per_seed) - 1}' if per_seed and len(per_seed) > 1 else ''}); the tables below are seed "
        f"{s.seed}'s, the last section gives every figure's spread over the seeds.",
        f"- Evaluation: the same {s.n} seeded test examples (seed {s.seed}) for every model; attacks "
        f"{', '.join(s.attacks)} (Square: {s.square_queries} queries); PGD step eps/4 with random start, CW margin 50 (see the evaluation protocol).",
        f"- Wall time of this invocation: {total_seconds:.0f} s (finished runs and cached evaluations are reused; the "
        f"table gives each run's own training time, the sum of its epochs, and its evaluation's).",
        "",
        "| method | training time, sum of epochs (s) | eval wall time (s) | run |",
        "|---|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.method} | {r.train_seconds:.0f} | {r.eval_seconds:.0f} | `{r.run_dir}` |")
    lines += ["", f"## Table 1 analogue (accuracy %, {cfg.dataset}, eps {cfg.eps:g})", "", table1(results), ""]
    lines += claims_section(results)
    lines += spread_section(per_seed or [results])
    lines += ["", "## Full tables per method", ""]
    for r in results:
        lines += [f"### {r.method}", "", format_markdown(r.report)]
    lines += recipe_section()
    return "\n".join(lines) + "\n"
