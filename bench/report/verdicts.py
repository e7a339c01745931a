"""The report's verdicts ("better", "tie", "best within budget"), all decided by bench.analysis.

One `Judge` per report holds one PairedComparer, so each cell's bootstrap replicates are computed once however
many comparisons it takes part in. Quality: the paired bootstrap interval of the difference when both cells keep
per-image evidence from the same seeds; otherwise (a store from the first release, a cell without evidence,
other seeds) the old rule of the first release, *labelled unpaired*: two cells tie when their own confidence
intervals overlap. Latency: two latencies differ only when their interquartile ranges separate; a latency flagged
`unstable` takes part in no verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.analysis import (
    BudgetRow,
    Candidate,
    NotPaired,
    PairedComparer,
    Timing,
    best_within_budgets,
    check_pairable,
    latency_separated,
)
from bench.report.data import MetricInfo, RunData, Value, fmt

PAIRED = "paired"
UNPAIRED = "unpaired"
NO_EVIDENCE = "no per-image evidence"


def intervals_overlap(a: Value, b: Value) -> bool | None:
    """The first release's tie rule: do the two cells' own intervals overlap? None when either has none."""
    if a.half_width is None or b.half_width is None:
        return None
    return not (a.ci_high < b.ci_low or b.ci_high < a.ci_low)  # type: ignore[operator]


@dataclass(frozen=True)
class QualityVerdict:
    """Cell B compared with cell A on one quality metric.

    `verdict` is B relative to A: 'better' | 'worse' | 'tie' | 'undecided' (unpaired and an interval missing).
    `method` is 'paired' (delta and CI from bench.analysis) or 'unpaired' (`why` says why not paired; the
    verdict is then the interval-overlap rule and ci_low/ci_high are None)."""

    metric: str
    verdict: str
    method: str
    value_a: float
    value_b: float
    delta: float
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    why: str = ""

    @property
    def paired(self) -> bool:
        return self.method == PAIRED

    @property
    def method_label(self) -> str:
        return PAIRED if self.paired else f"{UNPAIRED}: {self.why}"

    def delta_text(self) -> str:
        """'−0.81 [−0.93, −0.70]' (paired CI), or the bare delta when unpaired."""
        if self.ci_low is None or self.ci_high is None:
            return _signed(self.delta, None)
        half = max(self.delta - self.ci_low, self.ci_high - self.delta, 0.0)
        return f"{_signed(self.delta, half)} [{_signed(self.ci_low, half)}, {_signed(self.ci_high, half)}]"

    def describe(self) -> str:
        """One line: verdict, delta, interval and how it was decided."""
        if self.paired:
            conf = f"{100 * (self.confidence or 0.95):g}%"
            return f"{self.verdict}: {self.delta_text()} (paired {conf} CI)"
        rule = {"tie": "intervals overlap", "better": "intervals apart", "worse": "intervals apart",
                "undecided": "no interval to compare"}[self.verdict]
        return f"{self.verdict}: {self.delta_text()} ({UNPAIRED}: {self.why}; {rule})"


def _signed(v: float, half: float | None) -> str:
    text = fmt(v, half)
    return text if text.startswith("-") or text in ("0", "–") else "+" + text


class Judge:
    """The verdicts of one run's report."""

    def __init__(self, data: RunData, comparer: PairedComparer | None = None) -> None:
        self.data = data
        self.comparer = comparer if comparer is not None else PairedComparer()
        self._memo: dict[tuple[str, str, str], QualityVerdict | None] = {}

    # -- quality ----------------------------------------------------------------------------------
    def why_unpaired(self, a_key: str, b_key: str, metric: str) -> str | None:
        """Why cells A and B cannot be compared pairwise on `metric` (None: they can)."""
        ea, eb = self.data.cell_evidence(a_key, metric), self.data.cell_evidence(b_key, metric)
        if ea is None or eb is None:
            missing = a_key if ea is None else b_key
            problem = self.data.evidence_problems.get(missing)
            return f"{NO_EVIDENCE} ({problem})" if problem else NO_EVIDENCE
        try:
            check_pairable(ea, eb)
        except NotPaired as e:
            return str(e)
        return None

    def quality(self, metric: MetricInfo, a_key: str, b_key: str) -> QualityVerdict | None:
        """B versus A on a quality metric; None when either value is missing or the metric has no direction."""
        memo = (metric.name, a_key, b_key)
        if memo not in self._memo:
            self._memo[memo] = self._quality(metric, a_key, b_key)
        return self._memo[memo]

    def _quality(self, metric: MetricInfo, a_key: str, b_key: str) -> QualityVerdict | None:
        va, vb = self.data.value(a_key, metric.name), self.data.value(b_key, metric.name)
        if not (va.ok and vb.ok) or metric.higher_is_better is None:
            return None
        hib = bool(metric.higher_is_better)
        why = self.why_unpaired(a_key, b_key, metric.name)
        if why is None:
            ea, eb = self.data.cell_evidence(a_key, metric.name), self.data.cell_evidence(b_key, metric.name)
            try:
                p = self.comparer.compare(metric.name, hib, ea, eb)  # type: ignore[arg-type]
            except NotPaired as e:
                why = str(e)
            else:
                return QualityVerdict(metric.name, p.verdict(), PAIRED, p.value_a, p.value_b, p.delta, p.ci_low,
                                      p.ci_high, p.confidence)
        a, b = float(va.value), float(vb.value)  # type: ignore[arg-type]
        overlap = intervals_overlap(va, vb)
        if overlap is None:
            verdict = "undecided"
        elif overlap:
            verdict = "tie"
        else:
            verdict = "better" if (b > a) == hib else "worse"
        return QualityVerdict(metric.name, verdict, UNPAIRED, a, b, b - a, why=why or NO_EVIDENCE)

    # -- latency ----------------------------------------------------------------------------------
    def timing(self, key: str, lat: MetricInfo) -> Timing | None:
        return self.data.timing(key, lat.name)

    # -- budgets ----------------------------------------------------------------------------------
    def candidates(self, cells: Sequence[Any], q: MetricInfo, lat: MetricInfo, label: Any) -> list[Candidate]:
        """The cells with both a quality value and a latency, as bench.analysis sees them."""
        out = []
        for c in cells:
            key = str(c.cell_key)
            v, t = self.data.value(key, q.name), self.timing(key, lat)
            if not v.ok or t is None:
                continue
            out.append(Candidate(key, label(c), float(v.value), bool(q.higher_is_better), t,  # type: ignore[arg-type]
                                 self.data.cell_evidence(key, q.name)))
        return out

    def budgets(self, cands: Sequence[Candidate], q: MetricInfo) -> list[tuple[BudgetRow, list[str]]]:
        """bench.analysis.best_within_budgets, plus per row the cells it could not compare pairwise (no evidence,
        other seeds) that tie with the best by the first release's interval-overlap rule, labelled unpaired."""
        rows = best_within_budgets(cands, self.comparer, q.name)
        out = []
        for row in rows:
            best = row.best
            unpaired = []
            for d in cands:
                if d is best or d.timing.unstable or d.timing.median > best.timing.median:
                    continue
                if self.why_unpaired(best.key, d.key, q.name) is None:
                    continue  # decided by the paired test inside best_within_budgets
                if intervals_overlap(self.data.value(best.key, q.name), self.data.value(d.key, q.name)):
                    unpaired.append(d.label)
            out.append((row, unpaired))
        return out


def latency_tie(a: Timing, b: Timing) -> bool:
    """Neither flagged unstable and the IQRs overlap."""
    return not a.unstable and not b.unstable and not latency_separated(a, b)
