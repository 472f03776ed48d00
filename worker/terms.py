"""Terms that explain a mood: which words may, and per-side tallies of their pulls.

A token's *pull* is its contribution to the negative minus the positive logit (> 0 pulls negative), as
the scorer's explanations give it. Per brand and window, a tally sums the pull of every term in posts
scored negative that pulls negative, and the opposite pull of every term in posts scored positive that
pulls positive. Stop words, masked URLs and handles, lexicon tokens (``__...__``), punctuation, numbers,
single letters and the brand's own name never explain a mood. Tallies are pruned to their strongest
entries when they grow, so memory is bounded.
"""

from __future__ import annotations

import re

_PRUNE_FACTOR, _KEEP_FACTOR = 100, 20  # a tally over 100 x top-K entries keeps its 20 x top-K strongest
MIN_PULL = 1e-6

#: Small fixed English stop-word list (function words and chat filler). A stop word never explains a
#: mood; scikit-learn's list is not used because the worker does not depend on scikit-learn. Unlike
#: that list it keeps "down", "off", "out" and "up": "app down" or "sold out" is what a complaint says.
STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't
    during each even ever few for from further get gets got had hadn't has hasn't have haven't having
    he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if im in
    into is isn't it it's its itself just let's lol me more most much my myself no nor not now of on
    once only or other ought our ours ourselves over own rt same shan't she she'd she'll she's should
    shouldn't so some such than that that's the their theirs them themselves then there there's these they
    they'd they'll they're they've this those through to too u under until us very via was wasn't we
    we'd we'll we're we've were weren't what what's when when's where where's which while who who's whom
    why why's will with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
    'll 're 's 've 'd 'm n't dont cant wont didnt doesnt isnt ive youre thats""".split()  # noqa: SIM905
)
_MASKED = frozenset({"url", "@user", "</s>"})  # masked URLs and handles; fastText's end token
_HAS_LETTER = re.compile(r"[^\W\d_]")
# is_term's answers, cached: the same words recur in every batch, and one dict lookup replaces four
# checks and a regex per token.
_TERM_CACHE: dict[str, bool] = {}
_TERM_CACHE_LIMIT = 200_000


def is_term(token: str) -> bool:
    """Whether a normalised token may explain a mood (see the module docstring for what is left out)."""
    known = _TERM_CACHE.get(token)
    if known is None:
        known = (
            len(token) > 1  # a lone letter ("f", "u") explains nothing
            and token not in STOP_WORDS
            and token.lower() not in _MASKED
            and not (token.startswith("__") and token.endswith("__"))
            and _HAS_LETTER.search(token) is not None
        )
        if len(_TERM_CACHE) >= _TERM_CACHE_LIMIT:  # unseen words are unbounded: start over
            _TERM_CACHE.clear()
        _TERM_CACHE[token] = known
    return known


class TermTally:
    """Summed pull and occurrences of terms on one side (negative or positive) of one brand window."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.limit = _PRUNE_FACTOR * top
        self.terms: dict[str, list[float]] = {}  # term -> [summed pull, occurrences]

    def add(self, term: str, pull: float) -> None:
        """One occurrence of ``term`` pulling by ``pull`` (> 0) towards this side."""
        entry = self.terms.get(term)
        if entry is None:
            self.terms[term] = [pull, 1.0]
            if len(self.terms) > self.limit:
                self._prune(_KEEP_FACTOR * self.top)
        else:
            entry[0] += pull
            entry[1] += 1.0

    def merge(self, term: str, pull: float, count: float) -> None:
        """``count`` occurrences of ``term`` pulling ``pull`` in all (another tally's entry)."""
        entry = self.terms.get(term)
        if entry is None:
            self.terms[term] = [pull, count]
            if len(self.terms) > self.limit:
                self._prune(_KEEP_FACTOR * self.top)
        else:
            entry[0] += pull
            entry[1] += count

    def _prune(self, keep: int) -> None:
        self.terms = dict(sorted(self.terms.items(), key=lambda item: -item[1][0])[:keep])

    def strongest(self) -> list[dict[str, object]]:
        """The ``top`` terms by summed pull, strongest first."""
        ranked = sorted(self.terms.items(), key=lambda item: (-item[1][0], item[0]))[: self.top]
        return [{"term": t, "pull": round(p, 4), "count": int(n)} for t, (p, n) in ranked]
