"""Shadow evaluation: a candidate model scores the same live texts as the current one, unseen, until
there is enough evidence to promote it or to reject it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from schemas import LABELS
from sentiment_model.drift import js_divergence, shares
from sentiment_model.predictor import Predictor
from sentiment_model.resolve import ResolvedModel
from sentiment_model.settings import ShadowPolicy


@dataclass(frozen=True)
class ShadowVerdict:
    """The outcome of a shadow evaluation, with the reason in words for the log."""

    promote: bool
    agreement: float
    label_jsd: float
    records: int
    reason: str


@dataclass
class ShadowEvaluation:
    """Accumulates agreement and label counts of a candidate against the current model."""

    candidate: Predictor
    model: ResolvedModel
    policy: ShadowPolicy
    records: int = 0
    agreed: int = 0
    current_counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(LABELS), np.int64))
    candidate_counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(LABELS), np.int64))

    def observe(self, normalized: list[str], current_ids: npt.NDArray[np.intp]) -> None:
        """Score ``normalized`` texts with the candidate and compare with the current model's labels; texts
        beyond the policy's ``records`` are ignored, so every verdict rests on exactly that many."""
        needed = self.policy.records - self.records
        normalized, current_ids = normalized[:needed], current_ids[:needed]
        if not normalized:
            return
        candidate_ids = self.candidate.predict_normalized(normalized).label_ids
        self.records += len(normalized)
        self.agreed += int(np.count_nonzero(candidate_ids == current_ids))
        self.current_counts += np.bincount(current_ids, minlength=len(LABELS))
        self.candidate_counts += np.bincount(candidate_ids, minlength=len(LABELS))

    @property
    def agreement(self) -> float:
        """Share of texts both models labelled the same."""
        return self.agreed / self.records if self.records else 0.0

    @property
    def label_jsd(self) -> float:
        """How far apart the two label distributions are (bits)."""
        return js_divergence(shares(self.current_counts.tolist()), shares(self.candidate_counts.tolist()))

    @property
    def done(self) -> bool:
        """Enough texts seen to decide."""
        return self.records >= self.policy.records

    def verdict(self) -> ShadowVerdict:
        """Promote only when agreement and label distribution are both within the policy's bounds."""
        agreement, jsd, p = self.agreement, self.label_jsd, self.policy
        problems = []
        if agreement < p.min_agreement:
            problems.append(f"agreement {agreement:.3f} < {p.min_agreement}")
        if jsd > p.max_label_jsd:
            mix = ", ".join(
                f"{label} {share:.0%}"
                for label, share in zip(LABELS, shares(self.candidate_counts.tolist()), strict=True)
            )
            problems.append(f"label distribution JSD {jsd:.3f} > {p.max_label_jsd} (candidate: {mix})")
        reason = "; ".join(problems) or (
            f"agreement {agreement:.3f} >= {p.min_agreement} and label JSD {jsd:.3f} <= {p.max_label_jsd}"
        )
        return ShadowVerdict(not problems, agreement, jsd, self.records, reason)
