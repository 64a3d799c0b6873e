"""From per-seed differences to a verdict: the interval, the seed schedule, the seeds to decide
(docs/conventions.md, "Uncertainty of a claim").

A seed's difference is d_s = μ + a_s + B + E_s: a_s its training, B the test images that every
seed shares, E_s how this seed's model meets those images. The spread of the seeds already holds
a_s and E_s; only B is invisible to it. The paired bootstrap (`uncertainty`) measures B as the
covariance that different seeds' draws share, so the interval adds t_{S−1}·s/√S and z·√cov̄ in
quadrature and counts no test noise twice.

One seed has no spread: its interval is the whole bootstrap (test sampling only) and it gets no
verdict. Verdicts are given only at the looks of a pre-planned seed schedule (3 → 5 → 10 seeds by
default), each at a level chosen so that the whole schedule gives a wrong verdict at most about
5 % of the time when there is no effect (a group-sequential design); re-checking a 95 % interval
after every added seed would err about 17 % of the time (both simulated in tests/test_claims.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

NO_VERDICT, INTERIM = "no verdict", "interim"
OUT_OF_REGIME = "out of regime"  # a precondition of the claim failed (oodrepro.regime)
VERDICTS = (
    "holds",
    "smaller than claimed",
    "fails",
    "inconclusive",
    OUT_OF_REGIME,
    INTERIM,
    NO_VERDICT,
)
MAX_SEEDS = 1000  # the projections search no further


@functools.lru_cache(maxsize=None)
def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


@functools.lru_cache(maxsize=None)
def _t(level: float, seeds: int) -> float:
    return float(stats.t.ppf(0.5 + level / 2, seeds - 1))


@dataclass(frozen=True)
class Interval:
    """A mean difference over seeds and its interval at `level`; with the spread and the shared
    test noise kept, the same interval for another seed count or level is a `replace` away."""

    mean: float
    std: float  # over seeds; NaN for one seed
    seeds: int
    level: float
    test_sd: float  # the test-set noise the seeds share (one seed: all of its bootstrap noise)
    shared_share: float  # that shared part / one seed's whole bootstrap variance; NaN for one seed

    @property
    def seed_half(self) -> float:
        """t_{S−1} · s/√S; NaN for one seed (unknown)."""
        if self.seeds < 2:
            return math.nan
        return _t(self.level, self.seeds) * self.std / math.sqrt(self.seeds)

    @property
    def test_half(self) -> float:
        return _z(self.level) * self.test_sd

    @property
    def half(self) -> float:
        return math.hypot(0.0 if self.seeds < 2 else self.seed_half, self.test_half)

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def interval(points: np.ndarray, draws: np.ndarray, level: float) -> Interval:
    """The interval of the mean of `points` (S,), the per-seed differences; `draws` (S, B) are the
    same differences on B paired bootstrap resamples of the test images (one resample for all).

    Training variance: t_{S−1} · s/√S from the seeds. Test-set noise: only the part the seeds
    share, the mean off-diagonal covariance of the draws (floored at 0); their own parts are
    already in s. One seed: the whole bootstrap variance, no training variance.
    """
    points, draws = np.asarray(points, np.float64), np.atleast_2d(np.asarray(draws, np.float64))
    seeds = len(points)
    mean = float(points.mean())
    if draws.shape[1] < 2:
        variance = np.zeros((seeds, seeds))
    else:
        variance = np.atleast_2d(np.cov(draws))
    if seeds == 1:
        return Interval(mean, math.nan, 1, level, math.sqrt(variance[0, 0]), math.nan)
    shared = max(float(variance[~np.eye(seeds, dtype=bool)].mean()), 0.0)
    own = float(np.diag(variance).mean())
    return Interval(
        mean,
        float(points.std(ddof=1)),
        seeds,
        level,
        math.sqrt(shared),
        shared / own if own > 0 else math.nan,
    )


def verdict(
    low: float, high: float, bound: float, strict: bool, effect: float | None = None
) -> str:
    """`fails` when the interval lies wholly on the other side of `bound`; `smaller than
    claimed` when, not failing, it lies wholly below the paper's `effect`; `holds` when it lies
    wholly on the claimed side of `bound` (difference > bound, or ≥ when not `strict`);
    `inconclusive` otherwise."""
    if (high <= bound) if strict else (high < bound):
        return "fails"
    if effect is not None and effect > bound and high < effect:
        return "smaller than claimed"
    if (low > bound) if strict else (low >= bound):
        return "holds"
    return "inconclusive"


@dataclass(frozen=True)
class Judgement:
    """A claim's verdict under the schedule and the interval a row prints."""

    interval: Interval  # on every seed, at the level of the look the row is judged at
    verdict: str
    look: int | None  # the seeds of the look that decided, or of the look the row is judged at
    decided_at: float | None  # that look's level, where it decided


@dataclass(frozen=True)
class Schedule:
    """Seed counts at which claims are judged (`looks`), each at its own `level`; `level` is
    used for the descriptive interval of a row with fewer seeds than the first look."""

    looks: tuple[int, ...]
    levels: tuple[float, ...]
    level: float

    @classmethod
    def of(cls, uncertainty: dict) -> Schedule:
        return cls(tuple(uncertainty["looks"]), tuple(uncertainty["levels"]), uncertainty["level"])

    def level_at(self, seeds: int) -> float:
        """The level of the look at which `seeds` seeds are judged: the first look that has at
        least as many, or the last look's."""
        for look, level in zip(self.looks, self.levels, strict=True):
            if seeds <= look:
                return level
        return self.levels[-1]

    def judge(
        self,
        points: np.ndarray,
        draws: np.ndarray,
        bound: float,
        strict: bool,
        effect: float | None = None,
    ) -> Judgement:
        """The first look (on the first `look` seeds, in the config's order) whose interval
        decides gives the verdict, which more seeds do not change. Undecided, a row at a look is
        `inconclusive`, between looks `interim`, before the first look `no verdict`."""
        seeds = len(points)
        if seeds < self.looks[0]:
            return Judgement(interval(points, draws, self.level), NO_VERDICT, None, None)
        for look, level in zip(self.looks, self.levels, strict=True):
            if look > seeds:
                break
            ci = interval(points[:look], draws[:look], level)
            said = verdict(ci.low, ci.high, bound, strict, effect)
            if said != "inconclusive":
                return Judgement(interval(points, draws, level), said, look, level)
        reached = max(look for look in self.looks if look <= seeds)
        between = seeds not in self.looks and seeds < self.looks[-1]
        return Judgement(
            interval(points, draws, self.level_at(seeds)),
            INTERIM if between else "inconclusive",
            reached,
            None,
        )

    def seeds_to_decide(self, ci: Interval, bound: float, effect: float | None) -> int | str:
        """The smallest seed count at which the interval would decide if the mean, the spread
        over seeds and the shared test noise stay as observed; a sentence where it cannot."""
        distance = abs(ci.mean - bound)
        if effect is not None and effect > bound and ci.mean < effect:
            distance = max(distance, effect - ci.mean)  # wholly below the paper's effect
        if ci.seeds < 2:  # its bootstrap holds the noise the seeds would share and its own
            return f"unknown from 1 seed (no spread): run {self.looks[0]}"
        if _z(self.levels[-1]) * ci.test_sd >= distance:
            return "more seeds cannot decide: the test sets are too small"
        for seeds in range(ci.seeds + 1, MAX_SEEDS + 1):
            if seeds < self.looks[-1] and seeds not in self.looks:
                continue  # judged only at a look
            if replace(ci, seeds=seeds, level=self.level_at(seeds)).half < distance:
                return seeds
        return f"more than {MAX_SEEDS}"

    def seeds_for_power(self, effect: float, sigma: float, power: float = 0.8) -> int | str:
        """Seeds at which a paired t-test at the schedule's level finds a true `effect` (beyond
        the bound) with probability `power`, the seeds' standard deviation being `sigma`: the
        noncentral t with S−1 degrees of freedom and noncentrality effect·√S/σ."""
        if effect <= 0:
            return "—"
        if sigma == 0:
            return self.looks[0]
        for seeds in range(max(2, self.looks[0]), MAX_SEEDS + 1):
            crit = _t(self.level_at(seeds), seeds)
            reached = stats.nct.sf(crit, seeds - 1, effect * math.sqrt(seeds) / sigma)
            if reached >= power:
                return seeds
        return f"more than {MAX_SEEDS}"


def sigma_upper(std: float, seeds: int, confidence: float = 0.95) -> float:
    """An upper confidence bound on the seeds' standard deviation from S of them (χ²)."""
    return std * math.sqrt((seeds - 1) / stats.chi2.ppf(1 - confidence, seeds - 1))
