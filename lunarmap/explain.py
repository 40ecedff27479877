"""SHAP explanations of the ranking score, per site and for any coordinate.

Uses SHAP's TreeExplainer (Lundberg & Lee 2017; Lundberg et al. 2020, "From local explanations
to global understanding with explainable AI for trees", Nat. Mach. Intell. 2:56-67) on the
fitted XGBoost model. Contributions are in the model's margin space (log-odds for the default
``reg:logistic`` score): ``base_value + sum(contributions) = logit(score)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


def _explainer(model):
    import shap

    return shap.TreeExplainer(model)


def shap_values(model, X: pd.DataFrame) -> tuple[np.ndarray, float]:
    """SHAP values (n_sites, n_features) float64 and the base value (margin space)."""
    ex = _explainer(model)
    sv = np.asarray(ex.shap_values(X.to_numpy(dtype="float64")), dtype="float64")
    base = float(np.ravel(ex.expected_value)[0])
    return sv, base


def top_factors(sv_row: np.ndarray, X_row: pd.Series, k: int = 3) -> list[dict]:
    """The ``k`` features with the largest |SHAP| for one site: name, value, contribution."""
    order = np.argsort(-np.abs(sv_row))[:k]
    return [
        {"feature": X_row.index[i], "value": None if pd.isna(X_row.iloc[i]) else float(X_row.iloc[i]), "shap": float(sv_row[i])}
        for i in order
        if sv_row[i] != 0.0
    ]


def format_factors(factors: list[dict]) -> str:
    """``"slope_p95=12.3 (-0.81); roughness_mean=4.1 (+0.22)"``."""
    parts = []
    for f in factors:
        v = "nan" if f["value"] is None else f"{f['value']:.3g}"
        parts.append(f"{f['feature']}={v} ({f['shap']:+.2f})")
    return "; ".join(parts)


def add_top_factors(table: pd.DataFrame, model, feature_names: list[str], k: int = 3) -> pd.DataFrame:
    """Add ``top_factors`` (readable string) and ``top_factors_json`` columns to ranked rows."""
    out = table.copy()
    rows = out["score"].notna()
    out["top_factors"] = ""
    out["top_factors_json"] = ""
    if rows.any():
        X = out.loc[rows, feature_names].astype("float64")
        sv, _ = shap_values(model, X)
        tf = [top_factors(sv[i], X.iloc[i], k) for i in range(len(X))]
        out.loc[rows, "top_factors"] = [format_factors(t) for t in tf]
        out.loc[rows, "top_factors_json"] = [json.dumps(t) for t in tf]
    return out


def explanation_table(model, features_row: pd.Series, feature_names: list[str]) -> tuple[pd.DataFrame, float, float]:
    """Full SHAP breakdown for one site.

    Returns
    -------
    (table, base_value, score)
        ``table``: feature, value, shap (margin units), sorted by |shap| descending.
    """
    X = features_row[feature_names].astype("float64").to_frame().T
    sv, base = shap_values(model, X)
    score = float(model.predict(X.to_numpy())[0])
    t = pd.DataFrame({"feature": feature_names, "value": X.iloc[0].to_numpy(), "shap": sv[0]})
    t = t.reindex(t["shap"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    return t, base, score


def waterfall_png(table: pd.DataFrame, base: float, score: float, path: str | os.PathLike, *, title: str = "", max_display: int = 12) -> Path:
    """Write a SHAP waterfall plot (shap.plots.waterfall) to ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    from .io import atomic_path

    exp = shap.Explanation(
        values=table["shap"].to_numpy(),
        base_values=base,
        data=table["value"].to_numpy(),
        feature_names=table["feature"].tolist(),
    )
    path = Path(path)
    plt.close("all")
    shap.plots.waterfall(exp, max_display=max_display, show=False)
    fig = plt.gcf()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.set_size_inches(9, 6)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
