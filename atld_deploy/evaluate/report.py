"""The evaluation report: JSON records, and the same numbers as a table in the layout of the paper's
Table 1 (rows = model x protocol, columns = attacks; the worst-case row marked)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocols import ALL, Outcome

MODEL_LABELS = {"static": "static", "imt": "IMT", "imt+": "IMT+"}
WORST_MARK = "WORST CASE"


@dataclass
class EvalReport:
    """`records`: one dict per (model, attack, protocol) with `model`, `attack`, `protocol`, `accuracy` (0-1),
    `n`, `eps`, `seconds`, `note` and `warnings` (the checks that fired for it). `warnings`: every warning.
    `meta`: what was evaluated and how (run, eps, seed, examples, machine, wall time)."""

    records: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def accuracy(self, model: str, attack: str, protocol: str) -> float | None:
        """The accuracy of one cell, or None if it was not evaluated."""
        for r in self.records:
            if (r["model"], r["attack"], r["protocol"]) == (model, attack, protocol):
                return float(r["accuracy"])
        return None


def make_records(outcomes: list[Outcome], warnings: list[dict[str, Any]], eps: float, seed: int) -> list[dict[str, Any]]:
    """JSON-ready records; each carries the warnings that name its model/protocol/attack (or `*`)."""

    def matches(w: dict[str, Any], o: Outcome) -> bool:
        return all(w[k] in ("*", getattr(o, k)) for k in ("model", "protocol", "attack"))

    return [
        {
            "model": o.model, "attack": o.attack, "protocol": o.protocol, "accuracy": round(o.accuracy, 6),
            "correct": int(o.correct.sum()), "n": len(o.correct), "eps": eps, "seed": seed,
            "seconds": round(o.seconds, 2), "note": o.note,
            "warnings": [w["message"] for w in warnings if matches(w, o)],
        }
        for o in outcomes
    ]


def _grid(report: EvalReport) -> tuple[list[str], list[tuple[str, str]], dict[tuple[str, str, str], dict[str, Any]]]:
    attacks = list(dict.fromkeys(r["attack"] for r in report.records if r["attack"] != ALL))
    if any(r["attack"] == ALL for r in report.records):
        attacks.append(ALL)
    rows = list(dict.fromkeys((r["model"], r["protocol"]) for r in report.records))
    cells = {(r["model"], r["protocol"], r["attack"]): r for r in report.records}
    return attacks, rows, cells


def _cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    return f"{100 * rec['accuracy']:.2f}" + ("!" if rec["warnings"] else "")


def _row_label(model: str, protocol: str) -> str:
    label = f"{MODEL_LABELS.get(model, model)} / {protocol}"
    return f">> {label} ({WORST_MARK})" if protocol == "worst-case" else label


def _footer(report: EvalReport) -> list[str]:
    m = report.meta
    lines = []
    if m:
        lines.append(f"accuracy in % on n={m.get('n')} test examples, eps={m.get('eps'):.4g}, seed={m.get('seed')}; "
                     "'!' = a check fired (see warnings); '-' = not applicable")
    for note in m.get("notes", []):
        lines.append(f"note: {note}")
    for w in report.warnings:
        lines.append(f"WARNING [{w['check']}] {w['model']}/{w['protocol']}/{w['attack']}: {w['message']}")
    return lines


def format_table(report: EvalReport) -> str:
    """The report as a fixed-width terminal table (paper's Table 1 layout), then notes and warnings."""
    attacks, rows, cells = _grid(report)
    labels = [_row_label(*r) for r in rows]
    w0 = max([len("model / protocol")] + [len(s) for s in labels])
    widths = [max(7, len(a)) for a in attacks]
    head = "model / protocol".ljust(w0) + " | " + " | ".join(a.rjust(w) for a, w in zip(attacks, widths))
    lines = [head, "-" * len(head)]
    for (model, protocol), label in zip(rows, labels):
        if protocol == "worst-case":
            lines.append("=" * len(head))
        lines.append(label.ljust(w0) + " | " + " | ".join(_cell(cells.get((model, protocol, a))).rjust(w)
                                                         for a, w in zip(attacks, widths)))
        if protocol == "worst-case":
            lines.append("=" * len(head))
    return "\n".join(lines + _footer(report))


def format_markdown(report: EvalReport) -> str:
    """The same table as markdown; the worst-case rows in bold."""
    attacks, rows, cells = _grid(report)
    lines = ["| model / protocol | " + " | ".join(attacks) + " |", "|---|" + "---:|" * len(attacks)]
    for model, protocol in rows:
        vals = [_cell(cells.get((model, protocol, a))) for a in attacks]
        label = _row_label(model, protocol)
        if protocol == "worst-case":
            label, vals = f"**{label}**", [f"**{v}**" if v != "-" else v for v in vals]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    footer = _footer(report)
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {line}" for line in footer) if footer else "") + "\n"


CARD_MODES = {"static": "static", "imt": "imt", "imt+": "imt-plus"}  # the evaluation's model names -> IMT modes


def verdict_line(report: EvalReport) -> str:
    """The deployment gate's verdict on this evaluation, in one line (what `auto` would serve from a card
    with these figures; see atld_deploy.gate)."""
    from ..gate import verdict

    figures = {CARD_MODES[m]: acc for m in report.meta.get("models", [])
               if m in CARD_MODES and (acc := report.accuracy(m, ALL, "worst-case")) is not None}
    return verdict(figures, int(report.meta.get("n", 0)))
