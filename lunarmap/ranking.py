"""Ranking: lander constraints, a rule-based suitability label, an XGBoost score, ranks.

1. **Hard constraints** (:class:`LanderConstraints`) are evaluated per site from its features.
   A constraint whose layer was not computed is *not evaluated* (``pass_<name>`` is missing, and
   :func:`rank_sites` reports it in ``RankResult.notes``); it never silently passes or fails.
2. **Figures of merit** come from the layer registry (``LayerSpec.merit``): each layer's site
   mean is mapped from its worst to its best value onto 0..1; the suitability index is the
   weighted mean of the available merits for sites that pass every evaluated constraint, and a
   quarter of it for those that fail one (so failures are ordered among themselves). Labels: ``good`` (index >= 0.6), ``marginal`` (>= 0.35), ``poor``
   and ``infeasible``. These cut-offs and the merit ranges are lunarmap conventions (NASA's
   CASSA figure-of-merit weights are not public); all are parameters.
3. **Score**: an XGBoost model (Chen & Guestrin 2016) is fitted on the labelled footprints --
   the rule suitability index by default, or the user's own labels -- and predicts a score for
   every evaluable site, so SHAP (:mod:`lunarmap.explain`) can explain any ranking the same way.
4. **Rank**: sites that pass every evaluated constraint come first, by decreasing score, then
   the others; equal scores share a rank (``tie`` is True). Sites that could not be evaluated
   (outside the DEM, on nodata) get no rank and keep their ``status``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .errors import RankingError
from .features import BufferedStat
from .layers import load_providers

LABELS = ("infeasible", "poor", "marginal", "good")
#: Numeric values of the label names accepted as user labels.
LABEL_VALUES = {"infeasible": 0.0, "poor": 0.2, "marginal": 0.5, "good": 1.0}


@dataclass
class LanderConstraints:
    """Lander hard constraints. Every threshold is a named, overridable parameter.

    Source: NASA Human Landing System (HLS) landing-site requirements (2019), as applied to the
    Artemis III regions by Gracy & Lee (2024, LPSC LV abstract #1695) and Wueller et al. (2026);
    second-hand figures (the HLS document is not public), to be checked against the mission's
    own requirements before operational use.

    Attributes
    ----------
    slope_max_deg : float
        Maximum slope over the pad (deg). HLS: 8 deg.
    slope_clearance_m : float
        The pad must also be at least this far (m) from any steeper ground, evaluated as the
        maximum slope over the pad grown by this distance. HLS: 100 m.
    illumination_min : float
        Minimum time-mean solar illumination fraction (0..1). HLS: 0.33.
    earth_visibility_min : float
        Minimum fraction of time with direct-to-Earth line of sight (0..1). HLS: 0.50.
    """

    slope_max_deg: float = 8.0
    slope_clearance_m: float = 100.0
    illumination_min: float = 0.33
    earth_visibility_min: float = 0.50

    def checks(self) -> list[tuple[str, str, str, float, str]]:
        """(name, feature column, op, threshold, layer) for each constraint."""
        clear = BufferedStat("slope", "max", self.slope_clearance_m).column
        return [
            ("slope", clear, "le", self.slope_max_deg, "slope"),
            ("illumination", "illumination_fraction_mean", "ge", self.illumination_min, "illumination_fraction"),
            ("earth_visibility", "earth_visibility_fraction_mean", "ge", self.earth_visibility_min, "earth_visibility_fraction"),
        ]

    def buffered_stats(self) -> tuple[BufferedStat, ...]:
        """Buffered features the constraints need from :func:`lunarmap.features.site_features`."""
        return (BufferedStat("slope", "max", self.slope_clearance_m),)


@dataclass
class RuleLabeller:
    """Rule-based suitability index and label (lunarmap convention, see module docs)."""

    good_min: float = 0.6
    marginal_min: float = 0.35
    weights: dict[str, float] = field(default_factory=dict)  # layer name -> weight (default 1)
    #: Infeasible sites keep a graded index (this share of their merit) so they are ordered among
    #: themselves (a pad at 8.5 deg is a better fallback than one at 25 deg) yet below feasible ones.
    infeasible_scale: float = 0.25


@dataclass
class RankResult:
    """Output of :func:`rank_sites`."""

    table: pd.DataFrame  # one row per site, ranked ones first
    model: object  # fitted xgboost.XGBRegressor (or None)
    feature_names: list[str]
    notes: list[str]
    constraints: LanderConstraints
    label_source: str  # "rules" or "user"

    @property
    def ranked(self) -> pd.DataFrame:
        return self.table[self.table["rank"].notna()]


def evaluate_constraints(features: pd.DataFrame, constraints: LanderConstraints) -> tuple[pd.DataFrame, list[str]]:
    """Add ``pass_<name>`` (bool or NA) and ``feasible`` columns; return notes on what was not evaluated."""
    out = features.copy()
    notes = []
    evaluated = []
    for name, col, op, thr, layer in constraints.checks():
        if col not in out.columns or out[col].isna().all():
            notes.append(
                f"The {name} constraint ({col} {'<=' if op == 'le' else '>='} {thr:g}) was NOT evaluated: "
                f"layer '{layer}' was not computed."
            )
            continue
        v = out[col].to_numpy(dtype="float64")
        ok = v <= thr if op == "le" else v >= thr
        out[f"pass_{name}"] = pd.array(np.where(np.isfinite(v), ok, pd.NA), dtype="boolean")
        evaluated.append(name)
    if evaluated:
        passes = out[[f"pass_{n}" for n in evaluated]]
        out["feasible"] = passes.fillna(False).all(axis=1).astype(bool)
    else:
        out["feasible"] = True
    out.attrs["constraints_evaluated"] = evaluated
    if evaluated:
        fails = out[[f"pass_{n}" for n in evaluated]].fillna(False)
        out["failed_constraints"] = [", ".join(n for n, ok in zip(evaluated, row) if not ok) for row in fails.to_numpy()]
    else:
        out["failed_constraints"] = ""
    return out, notes


def suitability_index(features: pd.DataFrame, feasible: pd.Series, labeller: RuleLabeller) -> pd.Series:
    """Weighted mean of 0..1 figures of merit (from ``LayerSpec.merit``), 0 where infeasible."""
    specs = load_providers()
    num = pd.Series(0.0, index=features.index)
    den = pd.Series(0.0, index=features.index)
    for name, spec in specs.items():
        col = f"{name}_mean"
        if spec.merit is None or col not in features.columns:
            continue
        worst, best = spec.merit
        if features[col].isna().all():
            continue
        # a site where this merit is unknown (e.g. nodata under the footprint) counts as worst:
        # missing data must never make a site look better
        m = ((features[col] - worst) / (best - worst)).clip(0.0, 1.0).fillna(0.0)
        w = float(labeller.weights.get(name, 1.0))
        num += w * m
        den += w
    idx = (num / den.replace(0.0, np.nan)).fillna(0.0)
    return idx.where(feasible, labeller.infeasible_scale * idx)


def label_of(index: pd.Series, feasible: pd.Series, labeller: RuleLabeller) -> pd.Series:
    lab = np.where(index >= labeller.good_min, "good", np.where(index >= labeller.marginal_min, "marginal", "poor"))
    return pd.Series(np.where(feasible, lab, "infeasible"), index=index.index)


def _user_labels(values: pd.Series) -> pd.Series:
    """User labels -> float: numbers as given, or the names in ``LABEL_VALUES``."""
    num = pd.to_numeric(values, errors="coerce")
    names = values.astype(str).str.strip().str.lower().map(LABEL_VALUES)
    out = num.where(num.notna(), names)
    bad = values.notna() & (values.astype(str).str.strip() != "") & out.isna()
    if bad.any():
        raise RankingError(
            f"Unrecognised label(s) {sorted(set(values[bad].astype(str)))[:5]}: use numbers (higher = better) "
            f"or one of {list(LABEL_VALUES)}."
        )
    return out


def fit_model(X: pd.DataFrame, y: pd.Series, *, seed: int = 0, n_jobs: int | None = None):
    """Fit the XGBoost score model (deterministic for a seed).

    ``reg:logistic`` when labels lie in 0..1 (the rule index, binary labels), squared error
    otherwise.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xgboost as xgb

    y = y.astype("float64")
    objective = "reg:logistic" if (y.min() >= 0.0 and y.max() <= 1.0) else "reg:squarederror"
    model = xgb.XGBRegressor(
        n_estimators=300,
        max_depth=3,
        learning_rate=0.05,
        subsample=1.0,
        colsample_bytree=1.0,
        min_child_weight=1.0,
        objective=objective,
        random_state=seed,
        n_jobs=n_jobs or 1,
        tree_method="exact",
    )
    model.fit(X.to_numpy(dtype="float64"), y.to_numpy())
    return model


def rank_sites(
    footprints,
    features: pd.DataFrame,
    *,
    constraints: LanderConstraints | None = None,
    labeller: RuleLabeller | None = None,
    labels: pd.Series | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
) -> RankResult:
    """Evaluate constraints, label, fit the XGBoost score and rank the sites.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Sites from :mod:`lunarmap.sites` (``site_id``, ``name``, ``status``, ...).
    features : pandas.DataFrame
        From :func:`lunarmap.features.site_features`, same index as ``footprints``.
    constraints : LanderConstraints, optional
    labeller : RuleLabeller, optional
    labels : pandas.Series, optional
        User labels (same index; numbers, higher = better, or ``good``/``marginal``/``poor``/
        ``infeasible``); sites without a label are scored but not used for fitting. When given,
        they replace the rule labels for fitting.
    seed : int

    Returns
    -------
    RankResult

    Raises
    ------
    RankingError
        No site can be evaluated, or fewer than 2 labelled sites / a single label value.
    """
    constraints = constraints or LanderConstraints()
    labeller = labeller or RuleLabeller()
    feat_cols = [c for c in features.columns if c not in ("status", "n_pixels", "valid_fraction")]
    feat_cols = [c for c in feat_cols if features[c].notna().any()]
    table = footprints.drop(columns=[c for c in ("status",) if c in footprints.columns]).join(features)
    evaluable = table["status"].isin(["ok", "partly outside DEM"]) & (table["valid_fraction"] > 0)
    if not evaluable.any():
        raise RankingError(
            "No site can be evaluated: every site is outside the DEM or on nodata. Check that the sites "
            "and the DEM cover the same area (lunarmap prints each site's status)."
        )
    table, notes = evaluate_constraints(table, constraints)
    table.loc[~evaluable, "feasible"] = False
    table["suitability_index"] = suitability_index(table, table["feasible"], labeller).where(evaluable)
    table["label"] = label_of(table["suitability_index"].fillna(0.0), table["feasible"], labeller).where(evaluable)
    if labels is not None:
        y_all = _user_labels(labels.reindex(table.index))
        label_source = "user"
        table["user_label"] = y_all
    else:
        y_all = table["suitability_index"]
        label_source = "rules"
    fit_rows = evaluable & y_all.notna()
    if fit_rows.sum() < 2 or y_all[fit_rows].nunique() < 2:
        raise RankingError(
            f"Cannot fit the ranking model: {int(fit_rows.sum())} labelled evaluable site(s) with "
            f"{int(y_all[fit_rows].nunique())} distinct label value(s). Use more sites (e.g. --grid 500) "
            f"or labels that differ."
        )
    X = table[feat_cols].astype("float64")
    model = fit_model(X[fit_rows], y_all[fit_rows], seed=seed, n_jobs=n_jobs)
    score = pd.Series(np.nan, index=table.index)
    score[evaluable] = model.predict(X[evaluable].to_numpy())
    table["score"] = score.round(6)
    order = table[evaluable].assign(_f=table["feasible"].astype(int)).sort_values(["_f", "score"], ascending=[False, False], kind="mergesort")
    key = list(zip(-order["_f"], -order["score"]))
    ranks = pd.Series(0, index=order.index)
    r = 0
    prev = None
    for i, (idx, k) in enumerate(zip(order.index, key)):
        if k != prev:
            r = i + 1
            prev = k
        ranks[idx] = r
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table.loc[order.index, "rank"] = ranks.astype("int64").to_numpy()
    counts = table["rank"].value_counts()
    table["tie"] = table["rank"].map(lambda v: bool(pd.notna(v) and counts.get(v, 0) > 1))
    n_ties = int(table["tie"].sum())
    if n_ties:
        notes.append(f"{n_ties} sites share a rank with another site (equal score); see the 'tie' column.")
    n_bad = int((~evaluable).sum())
    if n_bad:
        reasons = table.loc[~evaluable, "status"].value_counts().to_dict()
        notes.append(f"{n_bad} site(s) could not be evaluated and are listed without rank: {reasons}.")
    n_inf = int((evaluable & ~table["feasible"]).sum())
    if n_inf and n_inf == int(evaluable.sum()):
        failing = {n: int((~table[f"pass_{n}"].fillna(False)).sum()) for n in table.attrs.get("constraints_evaluated", [])}
        notes.append(
            f"NO site passes every evaluated lander constraint (sites failing each: {failing}); the ranks order "
            f"fallbacks only. Try a finer --grid, other sites, or check the thresholds."
        )
    elif n_inf:
        notes.append(f"{n_inf} evaluated site(s) fail at least one lander constraint; they rank after all feasible sites.")
    constraints_evaluated = table.attrs.get("constraints_evaluated", [])
    table = pd.concat([table.loc[order.index], table.loc[~evaluable]])
    table.attrs["constraints_evaluated"] = constraints_evaluated
    table.attrs["constraints"] = asdict(constraints)
    return RankResult(table=table, model=model, feature_names=feat_cols, notes=notes, constraints=constraints, label_source=label_source)
