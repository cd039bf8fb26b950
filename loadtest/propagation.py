"""When a routing change shows in the traffic: a change detector with a false-alarm guarantee.

``canary demo --kube`` and ``canary rollout --kube`` apply a VirtualService and
must wait until the mesh routes by it (Istio pushes it to the ingress in
seconds, not at once), then say how long that took. Probes sent through the
ingress after the apply, each attributed to the subset that answered, are fed
one by one to a :class:`PropagationWatch`; it says, as early as the evidence
allows, that the new routing is live. Pure: objects in, objects out, the
caller's timestamps only (no clock, no socket).

**Evidence per probe.** Per route group (protocol x header group) the old and
the new VirtualService give shares p_old and p_new (:mod:`mesh.routing`).
Groups whose split did not change carry no information and are ignored; if
no group changes, there is nothing to wait for and the change counts as
observed at once. An attributed answer s of a changed group multiplies the
likelihood ratio by::

    r(s) = n(s) / p_old(s)   s answered under the old routing (p_old(s) > 0)
    r(s) = n(s) / eps        s impossible under the old routing
    r(s) = 1                 s has share 0 in both (no evidence either way)

where n is the new split with ``eps`` of its mass moved onto the subsets only
the old routing uses (so one stray answer after the change costs log(1/eps),
not everything). Unknown and failed probes carry no evidence.
Under the old routing E[r] <= 1, also when it misroutes up to ``eps`` of its
answers onto subsets it never uses: each product of r from a fixed start is a
non-negative supermartingale (a test martingale). Misrouting onto a subset
the old routing does use, with n(s)/p_old(s) > 1, is not covered: it raises
E[r] to at most 1 + eps * max n/p_old, so over T probes the false-alarm bound
alpha grows by that factor to the T (negligible at the default eps = 1e-6).

**Why not CUSUM with threshold log(1/alpha).** The old routing is live for an
unknown stretch after the apply, so the evidence must be measured from an
unknown start. Page's CUSUM (the best start, max_k) at log(1/alpha) has
average run length >= 1/alpha but no bound on the probability of a false
alarm within a run: watching 70/30 -> 100/0 under the old 70/30, a run of 13
stable answers (0.7^13 < 0.01) alarms in 58% of 300-probe watches (14% for
70/30 -> 50/50; seeded simulation, 2,000 runs). Instead the start is
*mixed* over a prior w_j = 1/(j(j+1)) on the informative probe j (summing to
1)::

    M_t = sum_{j <= t} w_j prod_{i=j..t} r_i  +  sum_{j > t} w_j

a mixture of test martingales, itself one starting at 1 (a Bayes factor of
"the routing changed at some probe" against "no change"), so by Ville's
inequality P_old(M_t ever >= 1/alpha) <= alpha, however long the watch runs
and whenever it stops. It updates in O(1): R_t = (R_{t-1} + w_t) r_t, and
M_t = R_t + 1/(t + 1). A change at informative probe j costs log(j(j+1))
nats on top of log(1/alpha): about (log(1/alpha) + 2 log j) / KL(new||old)
informative probes after the change (:func:`probes_to_observe` simulates it
exactly, overshoot included). One answer impossible under the old routing is
worth log(1/eps) (13.8 nats at the default 1e-6), which decides alone while
j (j + 1) <= alpha * n(s) / eps, about sqrt(alpha / eps) = 100 informative probes. The change point reported is
Page's estimate (the start maximising the likelihood ratio: where the CUSUM
last left 0), the detection time the deciding probe's.

Assumptions: answers are independent given the routing (Envoy's weighted
choice is), one change point for the whole mesh (one route table swap per
ingress; with several ingress replicas the guarantee still holds, detection
just waits for enough of them), and unknown/failed probes do not depend on
the subset that would have answered.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from canary.conventions import ERROR, UNKNOWN, Cell, order_cells
from canary.errors import UsageError
from canary.jsonable import jsonable
from canary.stats.expectations import Expectation
from mesh.routing import ManifestExpectations

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_EPS",
    "AlarmState",
    "GroupChange",
    "GroupEvidence",
    "Observation",
    "ProbeNeed",
    "PropagationWatch",
    "first_alarms",
    "group_changes",
    "probes_to_observe",
]

DEFAULT_ALPHA = 0.01
DEFAULT_EPS = 1e-6
_SAME = 1e-9  # shares closer than this are the same split
_BLOCK = 256  # probes simulated per step of probes_to_observe

Status = Literal["observed", "not_observed", "watching"]
Routing = ManifestExpectations | Mapping[Cell, Expectation]


@dataclass(frozen=True)
class GroupChange:
    """What one route group's answers say about old vs new: log r per subset (0 for others)."""

    cell: Cell
    old: Expectation | None
    new: Expectation | None
    log_factor: Mapping[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.log_factor)

    def kl_new_old(self) -> float:
        """Expected nats per attributed answer once the new routing is live: E_new[log r]."""
        if self.new is None:
            return 0.0
        return math.fsum(p * self.log_factor.get(s, 0.0) for s, p in self.new.shares.items())


def _cells(routing: Routing) -> Mapping[Cell, Expectation]:
    if isinstance(routing, ManifestExpectations):
        return {cell: found.expectation for cell, found in routing.cells.items()}
    return routing


def _log_factors(old: Expectation, new: Expectation, eps: float) -> dict[str, float]:
    p_old = {s: p for s, p in old.shares.items() if p > 0}
    p_new = {s: p for s, p in new.shares.items() if p > 0}
    if p_old.keys() == p_new.keys() and all(abs(p_old[s] - p_new[s]) <= _SAME for s in p_old):
        return {}
    only_old = [s for s in p_old if s not in p_new]
    keep = 1.0 - eps if only_old else 1.0
    n = {s: keep * p for s, p in p_new.items()} | {s: eps / len(only_old) for s in only_old}
    return {s: math.log(n[s]) - math.log(p_old.get(s, eps)) for s in n}


def group_changes(old: Routing, new: Routing, *, eps: float = DEFAULT_EPS) -> dict[Cell, GroupChange]:
    """Every route group of either routing, with its evidence function (empty: unchanged)."""
    if not 0 < eps <= 0.01:
        raise UsageError(f"eps must be in (0, 0.01] (the misrouting the old routing may show), got {eps!r}")
    before, after = _cells(old), _cells(new)
    out: dict[Cell, GroupChange] = {}
    for cell in order_cells(set(before) | set(after)):
        o, n = before.get(cell), after.get(cell)
        factors = _log_factors(o, n, eps) if o is not None and n is not None else {}
        out[cell] = GroupChange(cell=cell, old=o, new=n, log_factor=factors)
    return out


def _log_prior(j: int) -> float:
    """log w_j, w_j = 1/(j(j+1)): the prior on the change starting at informative probe j."""
    return -math.log(j) - math.log(j + 1)


@dataclass(frozen=True)
class GroupEvidence:
    """The probes one route group got, and what they said."""

    protocol: str
    group: str
    old: str  # the old split's label ("" when the group is not in the old routing)
    new: str
    changed: bool
    probes: int
    attributed: int  # probes attributed to a subset (unknown and failed ones are not)
    counts: Mapping[str, int]  # attributed answers per subset
    log_lr: float  # sum of log r over the group's answers since the apply


@dataclass(frozen=True)
class Observation:
    """Where the watch stands: observed (final), not_observed (final: gave up) or watching."""

    status: Status
    reason: str
    alpha: float
    applied_at: float
    at: float | None  # observed: the deciding probe's time; otherwise the last probe's or the give-up's
    after_apply_s: float | None  # at - applied_at
    probes: int  # probes fed (all groups, unknown and failed included)
    informative: int  # probes of changed groups answered by a subset either routing uses
    deciding_probe: int | None  # 1-based over all probes fed
    change_probe: int | None  # estimated first probe answered by the new routing (1-based)
    change_at: float | None
    change_after_apply_s: float | None
    log_evidence: float  # log M_t, the mixture's e-value
    log_threshold: float  # log(1/alpha)
    log_cusum: float  # max over starts of log LR (Page's CUSUM)
    groups: tuple[GroupEvidence, ...]

    @property
    def observed(self) -> bool:
        return self.status == "observed"

    @property
    def final(self) -> bool:
        return self.status != "watching"

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


class PropagationWatch:
    """Feed probes with :meth:`observe` in the order they came back; it answers once decided.

    ``old`` and ``new`` are the two routings (:class:`ManifestExpectations` or
    cell -> :class:`Expectation`); ``applied_at`` the apply's time in the
    probes' clock. ``budget`` (probes) and ``deadline_s`` (seconds after the
    apply) end the watch as not observed; :meth:`give_up` ends it at any time.
    """

    def __init__(self, old: Routing, new: Routing, *, alpha: float = DEFAULT_ALPHA,
                 eps: float = DEFAULT_EPS, applied_at: float = 0.0, budget: int | None = None,
                 deadline_s: float | None = None) -> None:
        if not 0 < alpha < 1:
            raise UsageError(f"alpha must be in (0, 1), got {alpha!r}")
        if budget is not None and budget < 1:
            raise UsageError(f"the probe budget must be at least 1, got {budget!r}")
        if deadline_s is not None and not deadline_s > 0:
            raise UsageError(f"the deadline must be a positive number of seconds, got {deadline_s!r}")
        self.alpha, self.eps = alpha, eps
        self.applied_at, self.budget, self.deadline_s = applied_at, budget, deadline_s
        self.changes = group_changes(old, new, eps=eps)
        self.threshold = math.log(1 / alpha)
        self.probes = 0
        self.informative = 0
        self.log_r = -math.inf  # log R_t
        self.cusum = -math.inf
        self.start: tuple[int, float] | None = None  # the CUSUM's start (probe, time)
        self.last_at: float | None = None
        self._probes: Counter[Cell] = Counter()
        self._counts: dict[Cell, Counter[str]] = {}
        self._log_lr: dict[Cell, float] = {}
        self._final: Observation | None = None
        if not self.changed:
            self._final = self._observation(
                "observed", applied_at, None,
                "no route group's split differs between the two routings: nothing to wait for")

    @property
    def changed(self) -> tuple[Cell, ...]:
        """The route groups whose split changes (the only ones whose probes count)."""
        return tuple(cell for cell, change in self.changes.items() if change.changed)

    @property
    def log_evidence(self) -> float:
        """log M_t (0 before any informative probe)."""
        return float(np.logaddexp(self.log_r, -math.log(self.informative + 1)))

    def observe(self, cell: Cell, subset: str | None, at: float) -> Observation | None:
        """One probe of route group ``cell`` answered by ``subset`` (None, "unknown" or "error":
        not attributed) at time ``at``. Returns the final :class:`Observation` once decided (and
        on every later call, which no longer counts), None while still watching."""
        if self._final is not None:
            return self._final
        change = self.changes.get(cell)
        if change is None:
            raise UsageError(
                f"a probe of {cell[0]}/{cell[1]}, a route group neither routing describes "
                f"({', '.join(f'{p}/{g}' for p, g in self.changes)}); derive both routings for "
                "every group the probes use")
        self.probes += 1
        self.last_at = at
        self._probes[cell] += 1
        if subset is not None and subset not in (UNKNOWN, ERROR):
            self._counts.setdefault(cell, Counter())[subset] += 1
            if subset in change.log_factor:  # a changed group, a subset either routing uses
                self._informative(cell, change.log_factor[subset], at)
        if self._final is None and self._exhausted(at):
            self._final = self._not_observed(at)
        return self._final

    def _informative(self, cell: Cell, x: float, at: float) -> None:
        self.informative += 1
        self._log_lr[cell] = self._log_lr.get(cell, 0.0) + x
        self.log_r = float(np.logaddexp(self.log_r, _log_prior(self.informative))) + x
        if self.cusum <= 0:
            self.cusum, self.start = x, (self.probes, at)
        else:
            self.cusum += x
        if self.log_evidence >= self.threshold:
            self._final = self._observation("observed", at, self.probes, self._observed_reason(at))

    def _exhausted(self, at: float) -> bool:
        over_budget = self.budget is not None and self.probes >= self.budget
        late = self.deadline_s is not None and at - self.applied_at >= self.deadline_s
        return over_budget or late

    def result(self, at: float | None = None) -> Observation:
        """The final observation, or where the watch stands; ``at`` past the deadline ends it."""
        if self._final is not None:
            return self._final
        if at is not None and self.deadline_s is not None and at - self.applied_at >= self.deadline_s:
            self._final = self._not_observed(at)
            return self._final
        when = at if at is not None else self.last_at
        return self._observation("watching", when, None, f"watching: {self._evidence_text()}")

    def give_up(self, at: float) -> Observation:
        """End the watch now (the caller's deadline or budget): not observed unless it was."""
        if self._final is None:
            self._final = self._not_observed(at)
        return self._final

    def _not_observed(self, at: float) -> Observation:
        return self._observation("not_observed", at, None, self._not_observed_reason(at))

    def _observed_reason(self, at: float) -> str:
        start = self.start or (self.probes, at)
        return (
            f"the new routing was observed {at - self.applied_at:.2f} s after the apply, at probe "
            f"{self.probes}; it likely took effect from probe {start[0]} "
            f"({start[1] - self.applied_at:.2f} s after the apply); {self._evidence_text()}"
        )

    def _not_observed_reason(self, at: float) -> str:
        waited = f"{at - self.applied_at:.1f} s / {self.probes} probes"
        changed = ", ".join(f"{p}/{g}" for p, g in self.changed)
        if not any(self._probes[cell] for cell in self.changed):
            return (f"the new routing was not observed after {waited}: no probe went to a route group "
                    f"whose split changes ({changed}); send probes in those groups")
        return (f"the new routing was not observed after {waited}: {self._evidence_text()}; "
                f"{self._groups_text()}. Check that the VirtualService was applied (and accepted) and "
                "that the probes go through the ingress, or give the mesh more time")

    def _evidence_text(self) -> str:
        return (f"evidence {math.exp(min(self.log_evidence, 700)):.3g} against the old routing "
                f"(1/alpha = {1 / self.alpha:g} decides) from {self.informative} informative probes")

    def _groups_text(self) -> str:
        parts = []
        for cell in self.changed:
            counts = self._counts.get(cell, Counter())
            answers = ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "none attributed"
            new = self.changes[cell].new
            parts.append(f"{cell[0]}/{cell[1]}: {self._probes[cell]} probes ({answers}; the new "
                         f"routing expects {new.label() if new else '?'})")
        return "; ".join(parts)

    def _observation(self, status: Status, at: float | None, deciding: int | None,
                     reason: str) -> Observation:
        observed_start = self.start if status == "observed" and deciding is not None else None
        groups = tuple(
            GroupEvidence(
                protocol=cell[0], group=cell[1],
                old=change.old.label() if change.old else "",
                new=change.new.label() if change.new else "",
                changed=change.changed,
                probes=self._probes[cell],
                attributed=sum(self._counts.get(cell, Counter()).values()),
                counts=dict(sorted(self._counts.get(cell, Counter()).items())),
                log_lr=self._log_lr.get(cell, 0.0),
            )
            for cell, change in self.changes.items()
        )
        return Observation(
            status=status, reason=reason, alpha=self.alpha, applied_at=self.applied_at, at=at,
            after_apply_s=None if at is None else at - self.applied_at,
            probes=self.probes, informative=self.informative, deciding_probe=deciding,
            change_probe=observed_start[0] if observed_start else None,
            change_at=observed_start[1] if observed_start else None,
            change_after_apply_s=observed_start[1] - self.applied_at if observed_start else None,
            log_evidence=self.log_evidence, log_threshold=self.threshold,
            log_cusum=self.cusum if self.informative else 0.0, groups=groups,
        )


# ---- sizing the probe budget -------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeNeed:
    """Probes (all groups, as mixed) needed after the change until the watch observes it."""

    mean: float  # over the runs that decided within the limit (inf if none did)
    median: float
    quantile: float  # which quantile ``at_quantile`` is
    at_quantile: float  # inf when more than 1 - quantile of the runs did not decide
    nats_per_probe: float  # E_new[log r] per probe: the drift once the new routing is live
    wald: float  # (log(1/alpha) + the best start's cost) / nats_per_probe: no-overshoot approximation
    runs: int
    undecided: int  # runs not decided within ``limit`` probes after the change
    old_probes: int


@dataclass
class AlarmState:
    """The statistic's state per run between blocks of probes (see :func:`first_alarms`)."""

    s: NDArray[np.float64]  # cumulative log r
    j: NDArray[np.int64]  # informative probes so far
    a: NDArray[np.float64]  # log sum_k w_{j(k)} e^{-S_{k-1}}

    @classmethod
    def start(cls, runs: int) -> AlarmState:
        return cls(np.zeros(runs), np.zeros(runs, dtype=np.int64), np.full(runs, -np.inf))


def first_alarms(log_factors: NDArray[np.float64], informative: NDArray[np.bool_], alpha: float,
                 state: AlarmState | None = None) -> tuple[NDArray[np.int64], AlarmState]:
    """The watch's statistic on many runs at once. Each row is one run's next probes in order
    (log r, and whether the probe is informative); returns each row's 0-based index of the
    deciding probe (-1: none in this block) and the state to continue with. It uses
    M_t = e^{S_t} sum_{k<=t} w_{j(k)} e^{-S_{k-1}} + 1/(j_t + 1) (S: cumulative log r, j:
    informative probes so far), the closed form of :class:`PropagationWatch`'s recursion."""
    runs = log_factors.shape[0]
    state = state or AlarmState.start(runs)
    s = state.s[:, None] + np.cumsum(log_factors, axis=1)
    j = state.j[:, None] + np.cumsum(informative, axis=1)
    log_w = np.where(informative, -np.log(np.maximum(j, 1)) - np.log(j + 1), -np.inf)
    terms = np.concatenate([state.a[:, None], log_w - (s - log_factors)], axis=1)
    a = np.logaddexp.accumulate(terms, axis=1)[:, 1:]
    log_m = np.logaddexp(s + a, -np.log(j + 1))
    hit = log_m >= math.log(1 / alpha)
    alarms = np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)
    return alarms, AlarmState(s[:, -1], j[:, -1], a[:, -1])


def _table(changes: Mapping[Cell, GroupChange], mix: Mapping[Cell, float],
           which: Literal["old", "new"]) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                   NDArray[np.bool_]]:
    """Outcomes of one probe under a routing: probabilities, log r, informative."""
    probs, logs, info = [], [], []
    for cell, weight in mix.items():
        change = changes[cell]
        split = change.old if which == "old" else change.new
        if split is None:
            raise UsageError(f"{cell[0]}/{cell[1]} is not in the {which} routing; leave it out of mix")
        for subset, share in split.shares.items():
            if share > 0:
                probs.append(weight * share)
                logs.append(change.log_factor.get(subset, 0.0))
                info.append(change.changed)
    return np.array(probs), np.array(logs), np.array(info, dtype=bool)


def _wald(alpha: float, drift: float, old_probes: int, informative: float, loss: float) -> float:
    """(log(1/alpha) + the cheapest start's cost) / drift: a start m old probes before the change
    costs log(j(j+1)) at its informative index j plus the m old probes' expected loss."""
    if drift <= 0:
        return math.inf
    costs = [math.log(j * (j + 1)) + m * loss
             for m in range(old_probes + 1) for j in [1 + (old_probes - m) * informative]]
    return (math.log(1 / alpha) + min(costs)) / drift


def probes_to_observe(old: Routing, new: Routing, *, alpha: float = DEFAULT_ALPHA,
                      eps: float = DEFAULT_EPS, old_probes: int = 0,
                      mix: Mapping[Cell, float] | None = None, quantile: float = 0.95,
                      runs: int = 2000, limit: int = 20_000, seed: int = 0) -> ProbeNeed:
    """How many probes after the change the watch needs, by seeded simulation of the watch itself.

    ``old_probes``: probes answered by the old routing after the apply, before the change
    (the propagation delay times the probe rate); ``mix``: each route group's share of the
    probes (default: even over the groups of both routings). Deterministic for a given seed.
    """
    changes = group_changes(old, new, eps=eps)
    both = [c for c, ch in changes.items() if ch.old is not None and ch.new is not None]
    weights = dict(mix) if mix is not None else {c: 1.0 for c in both}
    total = math.fsum(weights.values())
    if not weights or total <= 0 or min(weights.values()) < 0:
        raise UsageError("mix must give each probed route group a non-negative share, summing above 0")
    weights = {c: w / total for c, w in weights.items()}
    p_new, x_new, i_new = _table(changes, weights, "new")
    drift = float(np.dot(p_new, x_new))
    if not any(changes[c].changed for c in weights if weights[c] > 0):
        return ProbeNeed(0.0, 0.0, quantile, 0.0, 0.0, 0.0, runs, 0, old_probes)
    p_old, x_old, i_old = _table(changes, weights, "old")
    wald = _wald(alpha, drift, old_probes, float(np.dot(p_old, i_old)), -float(np.dot(p_old, x_old)))
    rng = np.random.default_rng(seed)
    needed = np.full(runs, np.inf)  # probes after the change; a false alarm before it counts 0
    live = np.arange(runs)
    state = AlarmState.start(runs)
    for length, p, xs, infos, is_new in ((old_probes, p_old, x_old, i_old, False),
                                         (limit, p_new, x_new, i_new, True)):
        fed = 0
        while fed < length and live.size:
            size = min(_BLOCK, length - fed)
            pick = rng.choice(len(p), size=(live.size, size), p=p)
            alarms, state = first_alarms(xs[pick], infos[pick], alpha, state)
            hit = alarms >= 0
            needed[live[hit]] = (fed + alarms[hit] + 1) if is_new else 0.0
            live, fed = live[~hit], fed + size
            state = AlarmState(state.s[~hit], state.j[~hit], state.a[~hit])
    decided = needed[np.isfinite(needed)]
    return ProbeNeed(
        mean=float(decided.mean()) if decided.size else math.inf,
        median=float(np.quantile(needed, 0.5, method="higher")),
        quantile=quantile,
        at_quantile=float(np.quantile(needed, quantile, method="higher")),
        nats_per_probe=drift,
        wald=wald,
        runs=runs,
        undecided=int(np.isinf(needed).sum()),
        old_probes=old_probes,
    )
