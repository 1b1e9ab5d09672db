"""The types every claim module fills in, and the registry that collects them (docs/theory.md §10).

A claim module (one file per claim, e.g. :mod:`.claim3_isotropy`) defines

- ``CLAIM``: a :class:`ClaimSpec` (measured from a sweep of the ordinary ``run`` pipeline) or a
  :class:`StandaloneClaim` (measured by its own code, e.g. claim 8, the probe);
- optionally ``sweeps(scale) -> tuple[SweepDef, ...]``: the sweeps it owns (a claim may read a
  sweep another module owns, by name: the sweep's cells are computed once).

:class:`ClaimRegistry` turns an ordered tuple of such modules into the reproduction's claims and
sweeps and checks them (unique ids and sweep names; every claim's sweep defined). Adding a claim is
one new module plus one line in the package's ``_MODULES``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr
from matplotlib.figure import Figure

from sgdfluct.errors import ConfigError, MeasurementError

if TYPE_CHECKING:
    from sgdfluct.report import ClaimResult

__all__ = [
    "FULL_SEED_CAP",
    "GATE_CHANGE",
    "SEED_CHANGE",
    "TODAY",
    "ClaimRegistry",
    "ClaimSpec",
    "Measurement",
    "SeedPlan",
    "StandaloneClaim",
    "SweepDef",
    "change",
    "require_metrics",
]

#: the date of the science issue's revision of every rule (the default date of :func:`change`)
TODAY = "2026-11-28"


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """Measured numbers (with uncertainties), the verdict and a few words of method."""

    measured: dict[str, Any]
    verdict: str
    details: str = ""


@dataclass(frozen=True, kw_only=True)
class SweepDef:
    """A named sweep: nested base config (TOML-like dict), grid of dotted keys, replicates."""

    name: str
    base: Mapping[str, Mapping[str, Any]]
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    replicates: int = 1


#: the most data seeds the confirmatory (full) scale gives one claim's sweep
FULL_SEED_CAP = 40


@dataclass(frozen=True, kw_only=True)
class SeedPlan:
    """The power calculation that sets a claim's number of seeds at the full scale.

    The between-seed standard deviation ``quick_sd`` of the quantity that decides the claim was
    measured at the exploratory (quick) scale; the confirmatory scale gets the fewest seeds whose
    95 % t-interval has half-width at most ``target_half_width`` at that sd
    (:func:`~sgdfluct.experiments.verdicts.seeds_for_half_width`), at least ``minimum`` and at most
    :data:`FULL_SEED_CAP`. Frozen here, before the full scale runs.

    Attributes
    ----------
    quantity : str
        The quantity whose interval decides the claim (its largest-sd grid point when several).
    quick_sd : float
        Its between-seed standard deviation at the quick scale.
    quick_seeds : int
        The seeds that sd came from.
    target_half_width : float
        The half-width the full scale should reach, with ``reason``.
    source : str
        Where ``quick_sd`` comes from (a run, with its date).
    reason : str
        Why this target (typically a fraction of the distance between the estimate and the rule's
        threshold, or of the rule's margin).
    minimum : int
        Fewest seeds whatever the calculation says.
    """

    quantity: str
    quick_sd: float
    quick_seeds: int
    target_half_width: float
    source: str
    reason: str
    minimum: int = 5

    def full_seeds(self, cap: int = FULL_SEED_CAP) -> int:
        """Seeds of the full scale: the power calculation, between ``minimum`` and ``cap``."""
        from sgdfluct.experiments.verdicts import seeds_for_half_width

        return seeds_for_half_width(
            self.quick_sd, self.target_half_width, minimum=self.minimum, cap=cap
        )

    def reached_half_width(self, cap: int = FULL_SEED_CAP) -> float:
        """The half-width ``full_seeds`` seeds reach at ``quick_sd`` (above target if capped)."""
        import numpy as np
        from scipy import stats

        n = self.full_seeds(cap)
        return float(stats.t.ppf(0.975, n - 1) * self.quick_sd / np.sqrt(n))


@dataclass(frozen=True, kw_only=True)
class ClaimSpec:
    """One claim of docs/theory.md §10, measured from a sweep.

    ``metrics`` are the sweep variables ``measure`` reads (``fnmatch`` patterns, each must match
    at least one variable); ``rule`` is the decision rule in words; ``rule_history`` lists every
    change of the rule as ``{"date", "change", "after_seeing_data"}``.
    """

    id: str
    statement: str
    expected: str
    sweep: str
    measure: Callable[[xr.Dataset], Measurement]
    figure: Callable[[xr.Dataset], Figure]
    metrics: tuple[str, ...] = ()
    rule: str = ""
    rule_history: tuple[Mapping[str, Any], ...] = ()
    #: the power calculation of its full-scale seeds; None when data seeds do not decide it
    #: (within-run standard errors or exact checks): ``seed_note`` then says why
    seed_plan: SeedPlan | None = None
    seed_note: str = ""


@dataclass(frozen=True, kw_only=True)
class StandaloneClaim:
    """A claim measured by its own code instead of a sweep (claim 8: the probe on an MLP).

    ``run(scale, out_dir, workers)`` measures it (keeping whatever it needs to resume under
    ``out_dir``), decides it by its ``rule`` and returns the
    :class:`~sgdfluct.report.ClaimResult`.
    """

    id: str
    statement: str
    expected: str
    run: Callable[[str, Path, int | None], ClaimResult]
    rule: str = ""
    rule_history: tuple[Mapping[str, Any], ...] = ()
    seed_plan: SeedPlan | None = None
    seed_note: str = ""
    #: the seeds it runs at a scale (recorded in claims.json)
    seeds: Callable[[str], Sequence[int]] | None = None


def require_metrics(ds: xr.Dataset, patterns: Sequence[str], claim: str = "") -> None:
    """Raise :class:`MeasurementError` naming every declared metric the sweep lacks."""
    names = [str(v) for v in ds.data_vars]
    missing = [p for p in patterns if not fnmatch.filter(names, p)]
    if missing:
        raise MeasurementError(
            f"claim {claim or '?'}: the sweep has no metric {missing} (declared in its spec); "
            "the runner's summary.json must provide it"
        )


def change(change: str, after_seeing_data: bool = True, date: str = TODAY) -> dict[str, Any]:
    """One ``rule_history`` entry: ``{"date", "change", "after_seeing_data"}``."""
    return {"date": date, "change": change, "after_seeing_data": after_seeing_data}


#: the revision for the science issue (seed t-intervals, saturation gate, rules that can fail);
#: made after earlier quick reproductions had been seen
SEED_CHANGE = change(
    "Aggregation over data seeds: per-seed values with a t-interval over seeds (the replication "
    "unit) instead of pooling all points / inverse-variance fixed effect with z = 1.96."
)
GATE_CHANGE = change(
    "Runs start from the paper's random start; a cell that did not saturate (loss, imbalance, "
    "dying units, live range dimension, second-half drift) turns holds into inconclusive."
)


@dataclass(frozen=True)
class ClaimRegistry:
    """The claims of the reproduction, in report order, from their modules.

    Parameters
    ----------
    modules : tuple
        Claim modules (or any objects) with a ``CLAIM`` attribute and optionally a
        ``sweeps(scale)`` function (see the module docstring).

    Raises
    ------
    ConfigError
        A module without a ``CLAIM``, two claims with one id, two sweeps with one name, or a
        claim whose sweep no module defines.
    """

    modules: tuple[Any, ...]

    def __post_init__(self) -> None:
        ids: list[str] = []
        for module in self.modules:
            claim = getattr(module, "CLAIM", None)
            if not isinstance(claim, ClaimSpec | StandaloneClaim):
                raise ConfigError(
                    f"claim module {getattr(module, '__name__', module)!r}: CLAIM must be a "
                    f"ClaimSpec or a StandaloneClaim, got {type(claim).__name__}"
                )
            ids.append(claim.id)
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ConfigError(f"claim ids {repeated} are registered more than once")
        defs = self.sweep_defs("quick")  # raises on a repeated sweep name
        undefined = sorted({c.id for c in self.claims if c.sweep not in defs})
        if undefined:
            raise ConfigError(f"claims {undefined} read a sweep that no claim module defines")

    @property
    def claims(self) -> tuple[ClaimSpec, ...]:
        """The sweep claims (:class:`ClaimSpec`), in registration order."""
        return tuple(m.CLAIM for m in self.modules if isinstance(m.CLAIM, ClaimSpec))

    @property
    def standalone(self) -> tuple[StandaloneClaim, ...]:
        """The claims measured by their own code (:class:`StandaloneClaim`)."""
        return tuple(m.CLAIM for m in self.modules if isinstance(m.CLAIM, StandaloneClaim))

    def ids(self) -> list[str]:
        """Every claim id: the sweep claims, then the standalone ones."""
        return [c.id for c in self.claims] + [c.id for c in self.standalone]

    def sweep_defs(self, scale: str = "quick") -> dict[str, SweepDef]:
        """Every module's sweeps at ``scale`` (``"smoke"``: the ``"quick"`` ones shrunk).

        At ``"full"`` (confirmatory) every sweep runs on fresh seeds (:func:`._sweeps.fresh_seeds`:
        no cell shares a data or SGD seed with the quick scale) and a sweep's replicates are the
        largest :meth:`SeedPlan.full_seeds` of the claims that read it (the module's own number
        where no claim has a plan).
        """
        from ._sweeps import fresh_seeds, shrink

        out: dict[str, SweepDef] = {}
        for module in self.modules:
            make = getattr(module, "sweeps", None)
            for sweep in make("quick" if scale == "smoke" else scale) if make else ():
                if sweep.name in out:
                    raise ConfigError(f"sweep {sweep.name!r} is defined by two claim modules")
                out[sweep.name] = shrink(sweep) if scale == "smoke" else sweep
        if scale == "full":
            for name, sweep in out.items():
                plans = [
                    c.seed_plan.full_seeds() for c in self.claims if c.sweep == name and c.seed_plan
                ]
                out[name] = SweepDef(
                    name=name,
                    base=fresh_seeds(sweep.base),
                    grid=sweep.grid,
                    replicates=max(plans) if plans else sweep.replicates,
                )
        return out

    def with_module(self, module: Any) -> ClaimRegistry:
        """A new registry with ``module`` appended (the original is unchanged)."""
        return ClaimRegistry((*self.modules, module))
