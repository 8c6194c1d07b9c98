"""The report's charts: what each one plots, as plain tables, and the matplotlib figures that draw them.

The series functions (`accuracy_series`, `class_impact_series`, ...) take the tables `load.load_analysis` read and
return DataFrames; the plot functions only draw what those return, so tests can check the charts against the CSVs.
`FigureFolder` writes each figure into figures/ as PNG and SVG and returns the SVG to inline in the page.
"""

import io
import re

import numpy as np
import pandas as pd

from pie import io_utils
from pie import names
from pie import outputs
from pie import variants
from pie.errors import PieError
from pie.report.load import SPARSITY_TOLERANCE
from pie.report.load import level_label

COLOR_DENSE = "#4a6fa5"
COLOR_PRUNED = "#d9822b"
COLOR_HURT = "#c0392b"
COLOR_HELPED = "#2e86c1"
COLOR_NEUTRAL = "#c8c8c8"
SUBSET_LABELS = {"pie": "PIEs", "random": "random sample", "non_pie": "non-PIEs"}

# Names of the figures the report writes into figures/ (stale ones are removed on a rerun).
FIGURE_PREFIXES = (
    "accuracy_vs_sparsity",
    "pies_vs_sparsity",
    "significant_classes_vs_sparsity",
    "class_impact_",
    "pie_accuracy",
    "robustness_",
    "methods_vs_size",
    "difficulty_deciles",
    "slice_impact_",
)


# ---------------------------------------------------------------------------------------------------------------------
# Chart series: what each figure plots, as plain tables.


def accuracy_series(levels):
  """Top-1 mean and std (fractions) of every population, by sparsity: the accuracy-vs-sparsity chart."""
  return (
      levels[["sparsity", "role", "num_models", "top1_mean", "top1_std"]].sort_values("sparsity").reset_index(drop=True)
  )


def significance_series(levels):
  """Number of changed classes per pruned level: at p < alpha uncorrected (`num_significant`, the paper's rule) and
  after FDR (`num_significant_fdr`, what the report calls significant; NaN where not reported)."""
  pruned = levels.loc[levels["role"] == "pruned"]
  return pd.DataFrame(
      {
          "sparsity": pruned["sparsity"].to_numpy(),
          "num_significant": pruned["num_significant_classes"].to_numpy(dtype=float),
          "num_significant_fdr": pruned["num_significant_classes_fdr"].to_numpy(dtype=float),
      }
  )


def floor_lines(noise_floor):
  """The noise floor's reference values for the charts: A/A mean PIEs, their upper quantile, mean significant classes
  (uncorrected and FDR), from summary.json's `noise_floor.half_splits`; None without A/A splits."""
  splits = (noise_floor or {}).get("half_splits")
  if not splits:
    return None
  return {
      "num_pies_mean": splits["num_pies_mean"],
      "num_pies_high": splits["num_pies_high"],
      "num_significant_mean": splits["num_significant_classes_mean"],
      "num_significant_fdr_mean": splits["num_significant_classes_fdr_mean"],
      "sizes": tuple(splits["sizes"]),
  }


def pies_series(summary_levels):
  """PIEs per pruned level with their excess over the noise floor (NaN where the study has no comparable floor)."""
  rows = [
      {
          "sparsity": float(level["sparsity"]),
          "num_pies": float(level["num_pies"]),
          "pies_excess": _float_or_nan(level.get("pies_excess")),
          "floor_mean": _float_or_nan(level.get("noise_floor_pies_mean")),
          "distinguishable": level.get("distinguishable_from_noise"),
      }
      for level in summary_levels
      if level["role"] == "pruned"
  ]
  return pd.DataFrame(rows, columns=["sparsity", "num_pies", "pies_excess", "floor_mean", "distinguishable"])


def _float_or_nan(value):
  return float("nan") if value is None else float(value)


def class_impact_series(class_stats, sparsity, top_n=25):
  """The classes the impact chart of one level shows, most hurt first.

  Classes are ranked by normalized change (change in recall minus the change in overall top-1: the quantity the
  t-test is about). With at most 2 * top_n classes, all are shown; otherwise the top_n with the most negative and the
  top_n with the most positive normalized change, so that the chart stays readable for 1000 classes (the full table
  is in the report).
  """
  if top_n < 1:
    raise ValueError(f"top_n must be at least 1, got {top_n}")
  rows = class_stats.loc[class_stats["sparsity"] == sparsity]
  if rows.empty:
    raise ValueError(f"{outputs.CLASS_STATS_CSV} has no row at sparsity {sparsity:g}")
  rows = rows.sort_values(["normalized_change", "class_id"], kind="stable")
  if len(rows) > 2 * top_n:
    hurt = rows.loc[rows["normalized_change"] < 0].head(top_n)
    helped = rows.loc[rows["normalized_change"] > 0].tail(top_n)
    rows = pd.concat([hurt, helped])
  columns = ["class_id", "class_name", "recall_change", "normalized_change", "significant", "p_value"]
  if "significant_fdr" in rows:
    columns.append("significant_fdr")
  return rows[columns].reset_index(drop=True)


def slice_label(kind, name, value):
  """How the report names a slice: "attributes/Male = true", "Male = true & Young = false", "footwear (class group)"."""
  if kind == outputs.SLICE_KINDS[2]:
    return f"{value} (class group)"
  names, values = name.split(" & "), value.split(" & ")
  if len(names) != len(values):  # a value holding the separator itself: show it as it is
    return f"{name} = {value}"
  return " & ".join(f"{n} = {v}" for n, v in zip(names, values))


def slice_impact_series(slice_stats, sparsity, top_n=25):
  """The slices the subgroup chart of one level shows, most hurt first, in the columns `plot_class_impact` draws.

  Slices without examples have no change to draw and are left out; the others are ranked by normalized change (the
  slice's accuracy change minus the change in overall top-1), with at most top_n at each end as for classes.
  `class_name` is the slice's label (`slice_label`) with its size, `recall_change` its accuracy change.
  """
  rows = slice_stats.loc[(slice_stats["sparsity"] == sparsity) & slice_stats["normalized_change"].notna()]
  rows = rows.sort_values("normalized_change", kind="stable")
  if len(rows) > 2 * top_n:
    rows = pd.concat(
        [rows.loc[rows["normalized_change"] < 0].head(top_n), rows.loc[rows["normalized_change"] > 0].tail(top_n)]
    )
  labels = [
      f"{slice_label(k, n, v)} (n={int(size)})"
      for k, n, v, size in zip(rows["slice_kind"], rows["slice_name"], rows["slice_value"], rows["num_examples"])
  ]
  return pd.DataFrame(
      {
          "class_name": labels,
          "recall_change": rows["accuracy_change"].to_numpy(dtype=float),
          "normalized_change": rows["normalized_change"].to_numpy(dtype=float),
          "significant": rows["significant"].to_numpy(dtype=bool),
          "significant_fdr": rows["significant_fdr"].to_numpy(dtype=bool),
          "p_value": rows["p_value"].to_numpy(dtype=float),
      }
  )


def pie_accuracy_series(pie_accuracy, sparsity):
  """Top-1 of both populations on PIEs, a random sample and non-PIEs at one level, in that subset order."""
  rows = pie_accuracy.loc[pie_accuracy["sparsity"] == sparsity]
  out = []
  for subset in outputs.SUBSETS:
    for population in outputs.POPULATIONS:
      match = rows.loc[(rows["subset"] == subset) & (rows["population"] == population)]
      if len(match) > 1:
        raise PieError(
            f"{outputs.PIE_ACCURACY_CSV}: {len(match)} rows for {population}/{subset} at sparsity " f"{sparsity:g}"
        )
      if len(match) == 1:
        row = match.iloc[0]
        out.append(
            {
                "subset": subset,
                "population": population,
                "num_examples": int(row["num_examples"]),
                "top1_mean": float(row["top1_mean"]),
                "top1_std": float(row["top1_std"]),
            }
        )
  return pd.DataFrame(out, columns=["subset", "population", "num_examples", "top1_mean", "top1_std"])


def robustness_severity_series(robustness, sparsity):
  """Mean top-1 over corruptions for each severity, both populations, and how many corruptions differ significantly
  (`num_significant`: q <= alpha after FDR; `num_significant_uncorrected`: p < alpha, the paper's rule)."""
  rows = robustness.loc[robustness["sparsity"] == sparsity]
  grouped = rows.groupby("severity", sort=True)
  return pd.DataFrame(
      {
          "severity": list(grouped.groups),
          "dense_top1": grouped["dense_top1_mean"].mean().to_numpy(),
          "pruned_top1": grouped["pruned_top1_mean"].mean().to_numpy(),
          "num_significant": grouped["significant_fdr"].sum().to_numpy().astype(int),
          "num_significant_uncorrected": grouped["significant"].sum().to_numpy().astype(int),
          "num_corruptions": grouped["corruption"].nunique().to_numpy().astype(int),
      }
  )


def robustness_drop_series(robustness, sparsity):
  """Mean accuracy drop over severities for each corruption, both populations, largest extra pruned drop first, and
  at how many severities the drops differ (`num_significant`: after FDR; `num_significant_uncorrected`: p < alpha)."""
  rows = robustness.loc[robustness["sparsity"] == sparsity]
  grouped = rows.groupby("corruption", sort=True)
  out = pd.DataFrame(
      {
          "corruption": list(grouped.groups),
          "dense_drop": grouped["dense_drop"].mean().to_numpy(),
          "pruned_drop": grouped["pruned_drop"].mean().to_numpy(),
          "num_significant": grouped["significant_fdr"].sum().to_numpy().astype(int),
          "num_significant_uncorrected": grouped["significant"].sum().to_numpy().astype(int),
          "num_severities": grouped["severity"].nunique().to_numpy().astype(int),
      }
  )
  out["extra_drop"] = out["pruned_drop"] - out["dense_drop"]
  return out.sort_values(["extra_drop", "corruption"], ascending=[False, True], kind="stable").reset_index(drop=True)


def methods_series(methods, method_class_stats, max_classes=3):
  """One row per compressed population, smallest compressed model first, with what it costs (the methods section).

  Columns: method, sparsity, num_models, bits_per_weight, compressed_bytes, size_ratio (compressed size over the
  dense model's), top1_mean, top1_std, top1_change (vs dense), num_significant_classes (p < alpha, uncorrected),
  num_significant_classes_fdr, num_pies (the CIEs), pie_fraction, harm_rank (1 = most harm: most CIEs, then most
  classes significant after FDR, then the largest top-1 loss) and hurt_classes: up to `max_classes` (name, normalized
  change) of the classes it hurts significantly (after FDR), most hurt first.
  """
  dense = methods.loc[methods["method"] == variants.DENSE]
  if len(dense) != 1:
    raise PieError(f"{outputs.SUMMARY_JSON}: expected one dense population, found {len(dense)}")
  dense = dense.iloc[0]
  rows = methods.loc[methods["method"] != variants.DENSE].copy()
  rows["size_ratio"] = rows["compressed_bytes"] / dense["compressed_bytes"]
  rows["top1_change"] = rows["top1_mean"] - dense["top1_mean"]
  order = rows.sort_values(
      ["num_pies", "num_significant_classes_fdr", "top1_change"], ascending=[False, False, True], kind="stable"
  )
  rows["harm_rank"] = pd.Series(np.arange(1, len(order) + 1), index=order.index)
  hurt = []
  for row in rows.itertuples(index=False):
    classes = pd.DataFrame()
    if method_class_stats is not None:
      classes = method_class_stats.loc[
          (method_class_stats["method"] == row.method)
          & ((method_class_stats["sparsity"] - row.sparsity).abs() < SPARSITY_TOLERANCE)
          & method_class_stats["significant_fdr"]
          & (method_class_stats["normalized_change"] < 0)
      ]
    classes = classes.sort_values("normalized_change", kind="stable").head(max_classes)
    hurt.append([(str(n), float(c)) for n, c in zip(classes["class_name"], classes["normalized_change"])])
  rows["hurt_classes"] = hurt
  return rows.sort_values(["compressed_bytes", "method"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------------
# Figures (matplotlib, object API on the Agg canvas: no pyplot global state).


# Names longer than this are cut in the charts (the tables beside them show them whole).
MAX_LABEL_CHARS = 60


def plain_text(value, max_chars=MAX_LABEL_CHARS, legend=False):
  """A name (a class, a method, a corruption, a candidate) as matplotlib should draw it: literally.

  A `$` would start mathtext, which draws "$x^2$" as math and raises on "$\\frac{$": every `$` is escaped. A name
  cut to `max_chars` characters with an ellipsis: a 10,000-character class name would squeeze the chart to nothing.
  Characters pie.names refuses (they can only come from files edited by hand) are drawn as U+FFFD. With `legend`, a
  leading underscore is kept visible: matplotlib leaves labels that start with one out of the legend.
  """
  text = names.REFUSED_CHARACTERS.sub("\ufffd", str(value))
  if len(text) > max_chars:
    text = text[: max_chars - 1] + "…"
  if legend and text.startswith("_"):
    text = "\u200b" + text
  return text.replace("$", r"\$")


def new_figure(width, height):
  """A matplotlib Figure on its own Agg canvas (inches), laid out by constrained layout; shared by compare.html."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  figure = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def style_axes(ax):
  """The report's look: no top or right spine, light horizontal grid lines behind the data."""
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.8)
  ax.set_axisbelow(True)


def plot_accuracy(series):
  """Top-1 (%) vs sparsity (%) with one-std error bars over each population's models."""
  figure = new_figure(5.2, 3.4)
  ax = figure.add_subplot()
  x = 100 * series["sparsity"].to_numpy()
  ax.errorbar(
      x,
      100 * series["top1_mean"].to_numpy(),
      yerr=100 * series["top1_std"].to_numpy(),
      color=COLOR_DENSE,
      marker="o",
      capsize=4,
      linewidth=1.5,
      label="mean ± std over models",
  )
  for xi, yi in zip(x, 100 * series["top1_mean"].to_numpy()):
    ax.annotate(f"{yi:.1f}", (xi, yi), textcoords="offset points", xytext=(6, 6), fontsize=8, color="#333333")
  ax.set_xlabel("sparsity (% of weights removed)")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title("Overall accuracy vs sparsity", fontsize=11)
  ax.set_xticks(x)
  ax.set_xticklabels([f"{v:.4g}" for v in x])
  style_axes(ax)
  return figure


def plot_significance(series, alpha, floor=None):
  """Number of classes whose normalized recall changed significantly (q <= alpha after FDR; solid) and at p < alpha
  uncorrected (the paper's rule; dashed), vs sparsity; with the A/A noise floor. Without FDR counts, only the
  uncorrected line, titled as such."""
  figure = new_figure(5.2, 3.4)
  ax = figure.add_subplot()
  x = 100 * series["sparsity"].to_numpy()
  has_fdr = bool(series["num_significant_fdr"].notna().any())
  if has_fdr:
    ax.plot(
        x,
        series["num_significant_fdr"].to_numpy(),
        marker="o",
        color=COLOR_HURT,
        label=f"significant: q ≤ {alpha:g} (FDR)",
    )
  ax.plot(
      x,
      series["num_significant"].to_numpy(),
      marker="s",
      linestyle="--",
      color="#555555",
      label=f"p < {alpha:g}, uncorrected (the paper's rule)",
  )
  if floor is not None:
    if has_fdr:
      ax.axhline(
          floor["num_significant_fdr_mean"],
          color=COLOR_HURT,
          linestyle=":",
          linewidth=1.2,
          label="noise floor (A/A mean, FDR)",
      )
    ax.axhline(
        floor["num_significant_mean"],
        color="#555555",
        linestyle=":",
        linewidth=1.2,
        label="noise floor (A/A mean, uncorrected)",
    )
  ax.set_xlabel("sparsity (% of weights removed)")
  ax.set_ylabel("classes")
  title = (
      "Classes significantly changed by pruning (FDR)" if has_fdr else f"Classes changed at p < {alpha:g} (uncorrected)"
  )
  ax.set_title(title, fontsize=11)
  ax.set_xticks(x)
  ax.set_xticklabels([f"{v:.4g}" for v in x])
  ax.set_ylim(bottom=0)
  ax.yaxis.get_major_locator().set_params(integer=True)
  ax.legend(frameon=False, fontsize=8)
  style_axes(ax)
  return figure


def plot_pies(series, floor=None):
  """PIEs vs sparsity, with the noise floor: the A/A mean and its upper quantile as a band."""
  figure = new_figure(5.2, 3.4)
  ax = figure.add_subplot()
  x = 100 * series["sparsity"].to_numpy()
  ax.plot(x, series["num_pies"].to_numpy(), marker="o", color=COLOR_PRUNED, label="PIEs (pruned vs dense)")
  if floor is not None:
    ax.axhspan(
        0,
        floor["num_pies_high"],
        color=COLOR_NEUTRAL,
        alpha=0.35,
        linewidth=0,
        label="noise floor (A/A, up to its upper quantile)",
    )
    ax.axhline(floor["num_pies_mean"], color="#555555", linestyle=":", linewidth=1.2, label="noise floor (A/A mean)")
  ax.set_xlabel("sparsity (% of weights removed)")
  ax.set_ylabel("PIEs")
  ax.set_title("PIEs vs sparsity", fontsize=11)
  if len(x):
    ax.set_xticks(x)
    ax.set_xticklabels([f"{v:.4g}" for v in x])
  ax.set_ylim(bottom=0)
  ax.yaxis.get_major_locator().set_params(integer=True)
  ax.legend(frameon=False, fontsize=8)
  style_axes(ax)
  return figure


def plot_class_impact(series, title, num_total=None, measure="recall", items="classes"):
  """Per class: change in recall as bars, normalized change as markers, significant classes coloured.

  Significant is `significant_fdr` (q <= alpha): coloured bar, bold name; a class at p < alpha only without the
  correction (`significant`, the paper's rule) is a grey bar with a coloured outline. A series without
  `significant_fdr` is coloured by `significant` and its legend says uncorrected.
  `num_total` is the number of classes at the level; when the series shows fewer, a line marks the gap. The subgroup
  chart draws slices with it (`slice_impact_series`): `measure` and `items` name what the bars and rows are.
  """
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel

  n = len(series)
  figure = new_figure(7.0, 1.3 + 0.26 * n)
  ax = figure.add_subplot()
  y = np.arange(n)
  has_fdr = "significant_fdr" in series
  uncorrected = series["significant"].to_numpy(dtype=bool)
  significant = series["significant_fdr"].to_numpy(dtype=bool) if has_fdr else uncorrected
  normalized = 100 * series["normalized_change"].to_numpy()
  direction = np.where(normalized < 0, COLOR_HURT, COLOR_HELPED)
  colors = np.where(significant, direction, COLOR_NEUTRAL)
  outlined = uncorrected & ~significant
  ax.barh(
      y,
      100 * series["recall_change"].to_numpy(),
      color=colors,
      height=0.7,
      edgecolor=np.where(outlined, direction, "none"),
      linewidth=np.where(outlined, 1.5, 0.0),
  )
  ax.scatter(normalized, y, marker="D", s=22, color="#111111", zorder=3)
  ax.axvline(0, color="#555555", linewidth=0.8)
  # normalized = recall change - overall top-1 change, so their difference is the overall change (the same for all).
  overall = float(np.mean(100 * series["recall_change"].to_numpy() - normalized)) if n else 0.0
  ax.axvline(overall, color="#555555", linewidth=1.0, linestyle="--")
  ax.set_yticks(y)
  ax.set_yticklabels([plain_text(name) for name in series["class_name"]], fontsize=8)
  for label, sig in zip(ax.get_yticklabels(), significant):
    if sig:
      label.set_fontweight("bold")
  hidden = num_total - n if num_total is not None else 0
  if hidden > 0:
    # The chart shows the two ends of the ranking: mark where the classes left out would be.
    split = int((normalized < 0).sum())
    ax.axhline(split - 0.5, color="#888888", linewidth=0.8, linestyle=":")
    ax.annotate(
        f"{hidden} less affected {items} not shown",
        (1.0, split - 0.5),
        xycoords=("axes fraction", "data"),
        xytext=(-4, 3),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize=8,
        color="#555555",
    )
  ax.set_ylim(n - 0.5, -0.5)  # most hurt on top, no blank margin
  ax.set_xlabel("change vs dense (percentage points)")
  ax.set_title(title, fontsize=11)
  ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
  ax.set_axisbelow(True)
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  rule = "after FDR" if has_fdr else "at p < α, uncorrected"
  handles = [
      Patch(color=COLOR_HURT, label=f"{measure} change, significantly hurt {rule}"),
      Patch(color=COLOR_HELPED, label=f"{measure} change, significantly spared {rule}"),
      Patch(color=COLOR_NEUTRAL, label=f"{measure} change, not significant"),
      Line2D([], [], marker="D", linestyle="none", color="#111111", label="normalized change (vs overall top-1)"),
      Line2D([], [], linestyle="--", color="#555555", label=f"change in overall top-1 ({overall:+.1f})"),
  ]
  if has_fdr:
    handles.append(
        Patch(facecolor=COLOR_NEUTRAL, edgecolor=COLOR_HURT, label="outlined: p < α only, uncorrected (paper's rule)")
    )
  figure.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=8)
  return figure


def plot_difficulty(difficulty, sparsities):
  """PIE rate per difficulty decile (1 = hardest), one line per level: where the PIEs fall."""
  figure = new_figure(5.2, 3.4)
  ax = figure.add_subplot()
  for sparsity in sparsities:
    rows = difficulty.loc[difficulty["sparsity"] == sparsity].sort_values("decile")
    ax.plot(rows["decile"], 100 * rows["pie_rate"], marker="o", label=f"{level_label(sparsity)} sparsity")
  ax.set_xlabel("difficulty decile (1 = hardest for the dense models)")
  ax.set_ylabel("PIEs (% of the decile)")
  ax.set_title("Where PIEs fall", fontsize=11)
  ax.set_xticks(range(1, 11))
  ax.set_ylim(bottom=0)
  ax.legend(frameon=False, fontsize=8)
  style_axes(ax)
  return figure


def plot_pie_accuracy(series_by_level):
  """Top-1 of each population on PIEs, a random sample and non-PIEs, one panel per level."""
  levels = list(series_by_level)
  figure = new_figure(max(4.0, 3.4 * len(levels)), 3.4)
  axes = figure.subplots(1, len(levels), sharey=True, squeeze=False)[0]
  width = 0.38
  for ax, sparsity in zip(axes, levels):
    series = series_by_level[sparsity]
    x = np.arange(len(outputs.SUBSETS))
    for offset, population, color in zip((-width / 2, width / 2), outputs.POPULATIONS, (COLOR_DENSE, COLOR_PRUNED)):
      rows = series.loc[series["population"] == population].set_index("subset").reindex(list(outputs.SUBSETS))
      ax.bar(
          x + offset,
          100 * rows["top1_mean"].to_numpy(),
          width,
          yerr=100 * rows["top1_std"].to_numpy(),
          color=color,
          capsize=3,
          label=f"{population} population",
      )
    ax.set_xticks(x)
    ax.set_xticklabels([SUBSET_LABELS[s] for s in outputs.SUBSETS], fontsize=8)
    ax.set_title(f"{level_label(sparsity)} sparsity", fontsize=10)
    ax.set_ylim(0, 105)
    style_axes(ax)
  axes[0].set_ylabel("top-1 accuracy (%)")
  handles, labels = axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False, fontsize=8)
  return figure


def plot_robustness_severity(series_by_level):
  """Mean top-1 over corruptions vs severity for both populations, one panel per level."""
  levels = list(series_by_level)
  figure = new_figure(max(4.0, 3.4 * len(levels)), 3.4)
  axes = figure.subplots(1, len(levels), sharey=True, squeeze=False)[0]
  for ax, sparsity in zip(axes, levels):
    series = series_by_level[sparsity]
    ax.plot(series["severity"], 100 * series["dense_top1"], marker="o", color=COLOR_DENSE, label=variants.DENSE)
    ax.plot(
        series["severity"],
        100 * series["pruned_top1"],
        marker="s",
        color=COLOR_PRUNED,
        label=f"pruned {level_label(sparsity)}",
    )
    for severity, value, k, total in zip(
        series["severity"], 100 * series["pruned_top1"], series["num_significant"], series["num_corruptions"]
    ):
      ax.annotate(
          f"{k}/{total}",
          (severity, value),
          textcoords="offset points",
          xytext=(0, -13),
          ha="center",
          fontsize=7,
          color=COLOR_HURT if k else "#777777",
      )
    ax.set_xticks(series["severity"].tolist())
    ax.margins(x=0.08, y=0.15)
    ax.set_xlabel("corruption severity")
    ax.set_title(f"{level_label(sparsity)} sparsity", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    style_axes(ax)
  axes[0].set_ylabel("top-1, mean over corruptions (%)")
  return figure


def plot_robustness_drop(series, title):
  """Mean accuracy drop per corruption for both populations; corruptions with a significant difference (after FDR) at
  some severity starred."""
  n = len(series)
  figure = new_figure(6.4, 1.4 + 0.42 * n)
  ax = figure.add_subplot()
  y = np.arange(n)
  ax.barh(y - 0.2, 100 * series["dense_drop"].to_numpy(), 0.4, color=COLOR_DENSE, label=variants.DENSE)
  ax.barh(y + 0.2, 100 * series["pruned_drop"].to_numpy(), 0.4, color=COLOR_PRUNED, label="pruned")
  for yi, drop, k, total in zip(
      y,
      100 * np.maximum(series["dense_drop"], series["pruned_drop"]).to_numpy(),
      series["num_significant"],
      series["num_severities"],
  ):
    ax.annotate(
        f"{k}/{total} severities significant (FDR)",
        (max(drop, 0), yi),
        textcoords="offset points",
        xytext=(4, 0),
        va="center",
        fontsize=7,
        color=COLOR_HURT if k else "#777777",
    )
  ax.margins(x=0.25)
  labels = [plain_text(c) + (" *" if k else "") for c, k in zip(series["corruption"], series["num_significant"])]
  ax.set_yticks(y)
  ax.set_yticklabels(labels, fontsize=8)
  for label, k in zip(ax.get_yticklabels(), series["num_significant"]):
    if k:
      label.set_fontweight("bold")
  ax.invert_yaxis()
  ax.set_xlabel("top-1 drop from clean, mean over severities (percentage points)")
  ax.set_title(title, fontsize=11)
  ax.legend(frameon=False, fontsize=8, loc="lower right")
  ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.8)
  ax.set_axisbelow(True)
  ax.spines["top"].set_visible(False)
  ax.spines["right"].set_visible(False)
  return figure


def plot_methods(series, dense):
  """Top-1, significant classes and CIEs of each population against its compressed size (log scale).

  One colour and marker per method (legend below the panels); pruning levels are written beside their points.
  """
  import matplotlib.ticker as ticker  # pylint: disable=import-outside-toplevel

  figure = new_figure(11.0, 4.0)
  axes = figure.subplots(1, 3)
  methods = list(dict.fromkeys(series["method"]))
  markers = "o^vDP*Xh<>"
  palette = ("#d9822b", "#8e44ad", "#27ae60", "#c0392b", "#16a085", "#7f8c8d", "#2c3e50", "#b7950b")
  panels = (
      ("top1_mean", "top-1 (%)", 100.0, dense["top1_mean"]),
      ("num_significant_classes_fdr", "classes significantly changed (FDR)", 1.0, 0.0),
      ("num_pies", "CIEs (examples)", 1.0, 0.0),
  )
  positive = bool((series["compressed_bytes"] > 0).all()) and np.isfinite(dense["compressed_bytes"])
  for ax, (column, label, scale, dense_value) in zip(axes, panels):
    for i, method in enumerate(methods):
      rows = series.loc[series["method"] == method]
      kb = rows["compressed_bytes"].to_numpy(dtype=float) / 1024
      values = scale * rows[column].to_numpy(dtype=float)
      ax.scatter(
          kb,
          values,
          color=palette[i % len(palette)],
          marker=markers[i % len(markers)],
          zorder=3,
          label=plain_text(method, legend=True),
          alpha=0.85,
      )
      if variants.is_pruning(method):
        for x, y, level in zip(kb, values, rows["sparsity"]):
          ax.annotate(f"{100 * level:.4g}%", (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    if np.isfinite(dense["compressed_bytes"]):
      ax.scatter(
          [dense["compressed_bytes"] / 1024],
          [scale * dense_value],
          color=COLOR_DENSE,
          marker="s",
          zorder=3,
          label=variants.DENSE,
      )
    if positive:
      ax.set_xscale("log")
      ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
      ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
      ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("compressed size (KB, gzip)")
    ax.set_ylabel(label)
    if column != "top1_mean":
      ax.set_ylim(bottom=0)
      ax.yaxis.get_major_locator().set_params(integer=True)
    style_axes(ax)
  handles, labels = axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8), frameon=False, fontsize=8)
  figure.suptitle("What each compression method costs, against the size it reaches", fontsize=11)
  return figure


class FigureFolder:
  """figures/ of one report run: each figure saved as PNG and SVG, and the SVG returned for inlining.

  A rerun draws the figures of the current files only: `remove_stale` then deletes the report's figures that this run
  did not draw (a level or robustness.csv gone), which would mislead; other files in the folder are kept.
  """

  def __init__(self, directory):
    self.directory = directory
    self.directory.mkdir(parents=True, exist_ok=True)
    self.written = set()

  def save(self, figure, name):
    """Writes <name>.png and <name>.svg and returns the SVG for inlining (ids prefixed to stay unique in the page)."""
    self.written.add(name)
    encoded = {fmt: encode(figure, fmt) for fmt in ("svg", "png")}
    io_utils.write_bytes(str(self.directory / f"{name}.svg"), encoded["svg"])
    io_utils.write_bytes(str(self.directory / f"{name}.png"), encoded["png"])
    return inline_svg(encoded["svg"].decode("utf-8"), prefix=name)

  def remove_stale(self):
    for path in self.directory.iterdir():
      if path.suffix in (".png", ".svg") and path.stem.startswith(FIGURE_PREFIXES) and path.stem not in self.written:
        path.unlink()


def encode(figure, fmt):
  """The figure as SVG or PNG bytes, the same bytes on every run (fixed ids and no date in the SVG, no software tag in
  the PNG), glyphs drawn as paths so that the SVG needs no font."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  metadata = {"Date": None} if fmt == "svg" else {"Software": None}
  with matplotlib.rc_context({"svg.hashsalt": "pie-report", "svg.fonttype": "path"}):
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=150, metadata=metadata)
  return buffer.getvalue()


def inline_svg(svg, prefix):
  """Makes a standalone SVG document fit to inline in HTML.

  Drops the XML prologue, lets the figure scale with the page, and prefixes every id (and reference to it) with
  `prefix`: matplotlib reuses ids such as glyph names across figures, and duplicate ids in one page make a figure
  inside a collapsed section draw another figure's definitions.
  """
  start = svg.find("<svg")
  if start < 0:
    raise ValueError("not an SVG document: no <svg> element")
  svg = svg[start:]
  safe = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)
  svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{safe}-{m.group(1)}"', svg)
  svg = re.sub(r'((?:xlink:)?href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{safe}-{m.group(2)}"', svg)
  svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{safe}-{m.group(1)})", svg)
  root_end = svg.find(">")
  root = svg[:root_end]
  width = re.search(r'\bwidth="([\d.]+)pt"', root)
  root = re.sub(r'\s(width|height)="[^"]*"', "", root)
  max_width = f"max-width:{float(width.group(1)) * 4 / 3:.0f}px;" if width else ""
  root += f' class="figure" role="img" style="{max_width}"'
  return root + svg[root_end:]
