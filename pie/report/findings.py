"""The report's key findings in plain language: the noise floor first, then per pruned level its accuracy cost, PIEs
and the classes hurt most, each read against the floor and the level's control.

"Significant", "hurt" and "spared" mean after Benjamini-Hochberg (q <= alpha, the `significant_fdr` columns); the
paper's uncorrected count (p < alpha) may follow, labelled as such. Each term is explained once, under the list
(`finding_terms`), so that a level's bullet says only what differs between levels.
"""

import dataclasses

import pandas as pd

from pie import variants
from pie.report import load
from pie.report.markup import count
from pie.report.markup import esc
from pie.report.markup import pct
from pie.report.markup import pp

# How the findings name a control; another control is named by its method.
CONTROL_NAMES = {
    variants.DENSE_REPLICATE: "a second dense population trained with other seeds",
    variants.SHAM: "a population trained through the pruning machinery at a negligible sparsity",
}
# How a count at p < alpha without the correction is labelled where it follows the FDR count.
UNCORRECTED = "at p &lt; α uncorrected, the paper's rule"
ALSO_IN_CONTROL = "also in the control"


def floor_findings(data):
  """What the noise floor says, in plain language: the control against the dense population and the A/A splits."""
  floor = data.noise_floor or {}
  findings = []
  if data.summary.get("normalization_warning"):
    findings.append(f"<b>Caution:</b> {esc(data.summary['normalization_warning'])}.")
  parts = []
  if floor.get("control"):
    parts.append(
        f"{CONTROL_NAMES.get(floor['control'], esc(floor['control']))} ({count(floor['control_models'])} "
        f"models) differs from the dense population on {count(floor['num_pies'])} examples (its “PIEs”, "
        f"{pct(floor['pie_fraction'], 2)}) and significantly in {_classes(floor['num_significant_classes_fdr'])} "
        f"({count(floor['num_significant_classes'])} {UNCORRECTED})"
    )
  splits = floor.get("half_splits")
  if splits:
    parts.append(
        f"random splits of {splits['pool_models']} dense models into {splits['sizes'][0]} + "
        f"{splits['sizes'][1]} give {splits['num_pies_mean']:.1f} PIEs on average (up to "
        f"{splits['num_pies_high']:g}) and {splits['num_significant_classes_fdr_mean']:.2f} significant classes "
        f"({pct(splits['splits_with_fdr_discovery'], 1)} of splits have one; "
        f"{splits['num_significant_classes_mean']:.2f} {UNCORRECTED})"
    )
  if parts:
    findings.append("<b>Noise floor</b> (nothing pruned, only seeds differ): " + "; ".join(parts) + ".")
  return findings


def _classes(number):
  return f"{count(number)} class{'' if number == 1 else 'es'}"


@dataclasses.dataclass
class TermsUsed:
  """What the level bullets use that `finding_terms` explains once: the controls of the levels that marked a class
  "also in the control", whether a bullet reads the paired test, and the levels without a noise floor by the note
  that says why (summary.json `floor_note`)."""

  marked_controls: set = dataclasses.field(default_factory=set)
  paired: bool = False
  uniform_shift: bool = False
  no_floor: dict = dataclasses.field(default_factory=dict)


def hurt_in_control(data, control):
  """Class ids on which the control population `control` differs from the dense one in the "hurt" direction after
  FDR (q <= alpha); the empty set without that control's rows."""
  stats = data.control_class_stats
  if control is None or stats is None or stats.empty:
    return set()
  rows = stats.loc[(stats["method"] == control) & stats["significant_fdr"] & (stats["normalized_change"] < 0)]
  return set(rows["class_id"].astype(int))


def _level_floor_text(summary_level):
  distinguishable = summary_level.get("distinguishable_from_noise")
  if distinguishable is None:
    return ", not read against a noise floor (no matched control). " if summary_level.get("floor_note") else ""
  low, high = summary_level.get("pies_excess_ci_low"), summary_level.get("pies_excess_ci_high")
  interval = "" if low is None or high is None else f", interval {low:+.1f} to {high:+.1f}"
  p_value = summary_level.get("pies_excess_p_value")
  test = "" if p_value is None else f"; exchange test p = {p_value:.2g}"
  excess = f"{summary_level['pies_excess']:+.1f} over its control's{interval}{test}"
  if distinguishable:
    return f", {excess}: more than seed noise gives. "
  return f", <b>within the noise floor</b> ({excess}): they may be seed noise. "


def _class_counts(stats):
  """(hurt, spared) classes after FDR, most hurt first, and the uncorrected counts (p < alpha) of each."""
  hurt = stats.loc[stats["significant_fdr"] & (stats["normalized_change"] < 0)].sort_values("normalized_change")
  spared = stats.loc[stats["significant_fdr"] & (stats["normalized_change"] > 0)]
  uncorrected = (
      int((stats["significant"] & (stats["normalized_change"] < 0)).sum()),
      int((stats["significant"] & (stats["normalized_change"] > 0)).sum()),
  )
  return hurt, spared, uncorrected


def _class_link(row, sparsity, marked):
  notes = [pp(row.recall_change)]
  shift = _uniform_shift_note(row)
  if shift:
    notes.append(shift)
  if marked:
    notes.append(ALSO_IN_CONTROL)
  return (
      f"<a href='#gallery' class='to-gallery' data-level='{load.level_key(sparsity)}' "
      f"data-class='{int(row.class_id)}' title='show its PIEs'><b>{esc(row.class_name)}</b></a> "
      f"({'; '.join(notes)})"
  )


BEYOND_SHIFT = "beyond a uniform shift"
EXPLAINED_BY_SHIFT = "a uniform shift explains it"


def _uniform_shift_note(row):
  """Whether a uniform shift of every example's margin explains a hurt class (class_stats.csv's uniform-shift
  columns), or "" when the analysis has none for it."""
  beyond = getattr(row, "beyond_uniform_shift", None)
  if beyond is None or pd.isna(beyond):
    return ""
  if bool(row.beyond_uniform_shift_significant_fdr) and beyond < 0:
    return f"{BEYOND_SHIFT}: {pp(beyond)}"
  return EXPLAINED_BY_SHIFT


def _level_finding(data, dense, sparsity, summary_level, max_names, used):
  """One level's bullet; records in `used` (TermsUsed) the terms it uses."""
  level = data.levels.loc[data.levels["sparsity"] == sparsity].iloc[0]
  hurt, spared, (hurt_uncorrected, spared_uncorrected) = _class_counts(
      data.class_stats.loc[data.class_stats["sparsity"] == sparsity]
  )
  text = (
      f"<b>{esc(load.level_label(sparsity))} sparsity:</b> top-1 {pct(dense.top1_mean)} → "
      f"{pct(level.top1_mean)} ({pp(level.top1_mean - dense.top1_mean)} points). "
  )
  if not pd.isna(level.num_pies):
    floor = _level_floor_text(summary_level)
    text += f"{count(level.num_pies)} PIEs ({pct(level.pie_fraction, 2)}){floor or '. '}"
  if summary_level.get("floor_note") and summary_level.get("distinguishable_from_noise") is None:
    used.no_floor.setdefault(summary_level["floor_note"], []).append(load.level_label(sparsity))
  control = load.floor_control(summary_level, data.noise_floor)
  in_control = hurt_in_control(data, control)
  if any(int(r.class_id) in in_control for r in hurt.head(max_names).itertuples(index=False)):
    used.marked_controls.add(control)
  if any(_uniform_shift_note(r) for r in hurt.head(max_names).itertuples(index=False)):
    used.uniform_shift = True
  if hurt.empty:
    text += "No class significantly hurt" + (" or spared" if spared.empty else "")
  else:
    names = ", ".join(
        _class_link(r, sparsity, int(r.class_id) in in_control) for r in hurt.head(max_names).itertuples(index=False)
    )
    more = f" and {len(hurt) - max_names} more" if len(hurt) > max_names else ""
    text += f"Significantly hurt, recall change in points: {names}{more}"
  if len(spared) or not hurt.empty:
    text += f"; {_classes(len(spared))} significantly spared"
  if (hurt_uncorrected, spared_uncorrected) != (len(hurt), len(spared)):
    text += f" ({UNCORRECTED}: {hurt_uncorrected} hurt, {spared_uncorrected} spared)"
  paired = summary_level.get("num_hurt_classes_paired_fdr")
  if paired is not None:
    text += f"; paired test: {_classes(paired)} hurt"
    used.paired = True
  return text + "."


def finding_terms(data, used=None):
  """The terms the level bullets use, each explained once (HTML sentences): the counting rule, and, when a bullet
  uses them (`used`, a TermsUsed), "also in the control", the paired test and why a level has no noise floor."""
  used = used or TermsUsed()
  alpha = data.alpha
  terms = [
      f"<b>Significantly hurt</b> and <b>spared</b>: the class's recall changed more (hurt) or less (spared) than "
      f"top-1, at q ≤ {alpha:g} after {load.fdr_scope_text(data.summary)}. Spared is relative: a class whose own "
      f"recall did not move while top-1 fell is spared. <b>Uncorrected</b> counts (the paper's rule) are the same test "
      f"at p &lt; {alpha:g} without the correction: where nothing differs they flag about {alpha:g} of the classes."
  ]
  if data.fdr_computed:
    terms.append(
        "This analysis predates q-values: the report computed them from the p-values of "
        f"{', '.join(data.fdr_computed)} (Benjamini–Hochberg per level)."
    )
  if used.marked_controls:
    names = " or ".join(esc(c.replace("_", " ")) for c in sorted(used.marked_controls))
    terms.append(
        f"<b>{ALSO_IN_CONTROL.capitalize()}</b>: the level's control ({names}), where nothing was pruned, differs from "
        "the dense population on that class in the same direction after FDR, so the dense population itself may be "
        "what is unusual."
    )
  if used.paired:
    terms.append("<b>Paired test</b>: each compressed model against its own dense twin, hurt after FDR.")
  if used.uniform_shift:
    terms.append(
        f"<b>{BEYOND_SHIFT.capitalize()}</b>: compression that hurt every example alike (a uniform shift of every "
        "example's margin, fitted to the level's top-1) would still hurt hard classes more than easy ones; a class "
        f"marked {BEYOND_SHIFT} lost that many points more than such a shift predicts, after FDR; for a class marked "
        f"<i>{EXPLAINED_BY_SHIFT}</i>, what it lost is within what the shift predicts."
    )
  for note, labels in used.no_floor.items():
    terms.append(f"<b>No matched control</b> ({', '.join(esc(label) for label in labels)}): {esc(note)}.")
  return terms


def level_findings(data, max_names=5):
  """Per pruned level, highest first, its bullet; and the terms those bullets use (`finding_terms`)."""
  dense = data.levels.loc[data.levels["role"] == variants.DENSE].iloc[0]
  by_sparsity = {float(level["sparsity"]): level for level in data.summary["levels"] if level["role"] == "pruned"}
  used = TermsUsed()
  bullets = [
      _level_finding(data, dense, sparsity, by_sparsity.get(sparsity, {}), max_names, used)
      for sparsity in reversed(data.pruned_sparsities)
  ]
  return bullets, finding_terms(data, used)


def findings_and_terms(data, max_names=5):
  """The key findings (`key_findings`) and the terms they use (`finding_terms`), each term once."""
  bullets, terms = level_findings(data, max_names)
  findings = floor_findings(data) + bullets
  for comparison in data.summary.get("mitigations") or []:
    findings.append(f"<b>Mitigation:</b> {esc(comparison['sentence'])}")
  return findings, terms


def key_findings(data, max_names=5):
  """Plain-language findings: the noise floor, then per pruned level its accuracy cost, PIE share and the classes hurt
  most, then the mitigations compared."""
  return findings_and_terms(data, max_names)[0]
