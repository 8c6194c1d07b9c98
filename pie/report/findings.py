"""The report's key findings in plain language: the noise floor first, then per pruned level its accuracy cost, PIEs
and the classes hurt most, each read against the floor and the controls."""

import pandas as pd

from pie import variants
from pie.report import load
from pie.report.markup import count
from pie.report.markup import esc
from pie.report.markup import pct
from pie.report.markup import pp


def floor_findings(data):
  """What the noise floor says, in plain language: the control against the dense population and the A/A splits."""
  floor = data.noise_floor or {}
  findings = []
  if data.summary.get("normalization_warning"):
    findings.append(f"<b>Caution:</b> {esc(data.summary['normalization_warning'])}.")
  control_names = {
      variants.DENSE_REPLICATE: "a second dense population trained with other seeds",
      variants.SHAM: "a population trained through the pruning machinery at a negligible sparsity",
  }
  parts = []
  if floor.get("control"):
    parts.append(
        f"{control_names.get(floor['control'], esc(floor['control']))} ({count(floor['control_models'])} "
        f"models) differs from the dense population on {count(floor['num_pies'])} examples (its “PIEs”, "
        f"{pct(floor['pie_fraction'], 2)}) and in {count(floor['num_significant_classes'])} classes "
        f"(p &lt; α; {count(floor['num_significant_classes_fdr'])} after FDR)"
    )
  splits = floor.get("half_splits")
  if splits:
    parts.append(
        f"random splits of {splits['pool_models']} dense models into {splits['sizes'][0]} + "
        f"{splits['sizes'][1]} give {splits['num_pies_mean']:.1f} PIEs on average (up to "
        f"{splits['num_pies_high']:g}) and {splits['num_significant_classes_mean']:.2f} significant classes "
        f"({splits['num_significant_classes_fdr_mean']:.2f} after FDR; "
        f"{pct(splits['splits_with_fdr_discovery'], 1)} of splits have an FDR discovery)"
    )
  if parts:
    findings.append("<b>Noise floor</b> (nothing pruned, only seeds differ): " + "; ".join(parts) + ".")
  return findings


def _hurt_in_control(data):
  """Class ids that a control population differs on significantly in the "hurt" direction (p < alpha)."""
  stats = data.control_class_stats
  if stats is None or stats.empty:
    return set()
  return set(stats.loc[stats["significant"] & (stats["normalized_change"] < 0), "class_id"].astype(int))


def _level_floor_text(summary_level):
  distinguishable = summary_level.get("distinguishable_from_noise")
  if distinguishable is None:
    return ""
  excess = (
      f"{summary_level['pies_excess']:+.1f} PIEs over the noise floor (interval "
      f"{summary_level['pies_excess_ci_low']:+.1f} to {summary_level['pies_excess_ci_high']:+.1f})"
  )
  if distinguishable:
    return f"{excess}: more PIEs than seed noise gives. "
  return f"<b>Within the noise floor:</b> {excess}; these PIEs may be seed noise. "


def key_findings(data, max_names=5):
  """Plain-language findings: the noise floor, then per pruned level its accuracy cost, PIE share and the classes hurt
  most."""
  dense = data.levels.loc[data.levels["role"] == variants.DENSE].iloc[0]
  findings = floor_findings(data)
  by_sparsity = {float(level["sparsity"]): level for level in data.summary["levels"] if level["role"] == "pruned"}
  for sparsity in reversed(data.pruned_sparsities):
    level = data.levels.loc[data.levels["sparsity"] == sparsity].iloc[0]
    stats = data.class_stats.loc[data.class_stats["sparsity"] == sparsity]
    hurt = stats.loc[stats["significant"] & (stats["normalized_change"] < 0)].sort_values("normalized_change")
    helped = stats.loc[stats["significant"] & (stats["normalized_change"] > 0)]
    text = (
        f"<b>{esc(load.level_label(sparsity))} sparsity:</b> top-1 {pct(dense.top1_mean)} → "
        f"{pct(level.top1_mean)} ({pp(level.top1_mean - dense.top1_mean)} points). "
    )
    if not pd.isna(level.num_pies):
      text += f"{count(level.num_pies)} PIEs ({pct(level.pie_fraction, 2)} of the evaluation set). "
    text += _level_floor_text(by_sparsity.get(sparsity, {}))
    if hurt.empty:
      text += "No class is significantly hurt beyond the overall change"
    else:
      in_control = _hurt_in_control(data)
      names = ", ".join(
          f"<a href='#gallery' class='to-gallery' data-level='{load.level_key(sparsity)}' "
          f"data-class='{int(r.class_id)}' title='show its PIEs'><b>{esc(r.class_name)}</b></a> "
          f"({pp(r.recall_change)}{'; also in the control' if r.class_id in in_control else ''})"
          for r in hurt.head(max_names).itertuples(index=False)
      )
      more = f" and {len(hurt) - max_names} more" if len(hurt) > max_names else ""
      text += (
          f"{len(hurt)} class{'es' if len(hurt) != 1 else ''} significantly hurt more than overall "
          f"(recall change in points): {names}{more}"
      )
      if any(int(r.class_id) in in_control for r in hurt.itertuples(index=False)):
        text += (
            " (“also in the control”: the control, where nothing was pruned, differs from the dense population "
            "on that class in the same direction, so the dense population itself may be what is unusual)"
        )
    paired = by_sparsity.get(sparsity, {}).get("num_hurt_classes_paired_fdr")
    if paired is not None:
      text += (
          f" (paired test, each model against its dense twin: {count(paired)} class"
          f"{'es' if paired != 1 else ''} hurt after FDR)"
      )
    # "Better than overall" is relative: a class whose own recall did not move while top-1 fell is spared, not
    # improved.
    text += (
        f"; {len(helped)} fared significantly better than overall (relatively spared: their own recall changed "
        "less than top-1, or not at all)."
        if len(helped)
        else "."
    )
    findings.append(text)
  for comparison in data.summary.get("mitigations") or []:
    findings.append(f"<b>Mitigation:</b> {esc(comparison['sentence'])}")
  return findings
