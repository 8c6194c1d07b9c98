"""Synthetic dense and compressed populations with planted ground truth.

Used to check that the statistics in ``pie.significance`` find what was planted (planted classes,
planted PIEs), flag the expected fraction of classes when nothing was planted, and to benchmark them
at ImageNet scale without training 60 networks.

Generative model (all draws from ``np.random.default_rng(seed)``):

* Labels are balanced: ``arange(num_examples) % num_classes``, shuffled.  Every example has a fixed
  *confuser* label, different from its true label, that receives every wrong vote.
* Every example has a type.  *Planted PIEs* (a ``pie_fraction`` of the examples of the non-ceiling
  classes, spread evenly over those classes and chosen at random inside each): at least 3/4 of the
  dense models predict the true label and at most 1/4 of the pruned models do.  Every other example
  is *easy* (the true label has a strict majority in both populations), with a class-specific
  probability, or *hard* (the confuser has a strict majority in both populations).
* *Ceiling classes* (``ceiling_classes``, none by default) hold only easy examples whose dense
  expected vote fraction is ``ceiling_accuracy`` (0.995): recall near 1 with little spread between
  models, like the classes every network gets right.  They follow the null like any other class
  (expected change exactly ``-accuracy_drop``, plus the planted effect if also impacted); the other
  classes' easy share is set so that the dense mean top-1 stays ``base_accuracy`` in expectation.
* For one example and one population, the number k of models that are right is a binomial count
  conditioned on the type's range (e.g. k > n/2 for easy examples), so no draw can move a modal label
  across the majority line.  Without skill (``skill_sd = 0``, the default) the k models are a
  uniformly random subset: the models are exchangeable and differ example by example.
* *Per-model skill* (``skill_sd > 0``): model m draws a skill s_m ~ N(0, skill_sd^2) (independently
  in each population) and is right on example i when its latent ``s_m + e_mi`` (e_mi ~ N(0, 1)
  independent) exceeds a threshold set so that ``P(right) = q_i`` (the example's binomial
  parameter) marginally over the skill.  Models are i.i.d. draws from a population of networks: a
  skilled model is right more often in every class at once, so class recall and top-1 co-vary across
  models and a population's mean top-1 varies with its models' skills, as in trained populations.
  Given the models, the count K_i of those right is a sum of independent Bernoullis and marginally
  Binomial(n, q_i) exactly; when K_i falls outside the type's range, a count is redrawn from the
  conditioned binomial and given to the models with the largest latents (a maximal coupling: the
  count's law is exactly the conditioned binomial and equals K_i except on the removed mass).
  Exact: the law of each example's count (hence every guarantee below), and every model's expected
  recall marginally over its skill.  Not exact, by design: the expected recall given the drawn
  skills.  Choosing *which* k models are right by skill while keeping k's draw independent of the
  skills (weighted sampling without replacement) was tried and rejected: the population's total
  then ignores the skills, so skill inflates the between-model variance without moving the
  population mean, and the class test becomes conservative (0.018 instead of 0.05 on ceiling
  classes with skill_sd 0.15) while the ``population`` normalization's flaw stays hidden.
* The conditioning makes the models of one example slightly (negatively) dependent: it removes the
  tails of the count, and with them some of its variance (``SimulatedStudy.conditioning_mass``
  reports the largest binomial mass removed).  With the default accuracies (0.85 / 0.15) the count
  keeps about 99% of the independent-models variance with 20 models per population, 88-92% with 10
  and 77-82% with 5, and the class test is conservative there; accuracies far from 1/2 (0.96 /
  0.04) keep 96-100% even with 5 models.
* The binomial parameters are solved so that the expected vote fraction of the true label is
  ``easy_accuracy`` (``ceiling_accuracy`` in ceiling classes) for easy and ``hard_accuracy`` for hard
  examples in the dense population, hard examples keep their expected accuracy after pruning, and
  the easy examples of class c move by the amount that makes the class's expected recall change
  exactly ``-accuracy_drop + effect_c`` (``effect_c`` = the planted ``class_effect`` for impacted
  classes, 0 otherwise) given the planted PIEs it contains.  With no planted effect, every class
  moves by exactly the overall drop in expectation: the class-level null of the paper holds by
  construction.

Consequences the tests rely on: the modal labels differ between the populations exactly on the
planted PIEs (strict majorities on both sides); the L1 distance between the two vote distributions
is >= 1 on planted PIEs and < 1 elsewhere; ``expected_normalized_change`` is the exact expectation
of the normalized change of every class.  With ``skill_sd = 0`` and no ceiling class the draws are
those of the versions before these options, bit for bit; ceiling classes and skills draw from the
stream only when asked for, and skills are drawn last, so a study with skill has the labels, types
and planted PIEs of the same seed without skill.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence, Union

import numpy as np
from scipy import stats

from pie import significance

__all__ = [
    "SimulatedStudy",
    "simulate_populations",
    "MarginModel",
    "MarginPopulation",
    "MarginStudy",
    "simulate_margins",
]

_BISECTION_STEPS = 64


@dataclasses.dataclass(frozen=True)
class SimulatedStudy:
  """A simulated study and its ground truth.

  labels: int [n_examples].
  dense_predictions, pruned_predictions: int [n_models, n_examples] top-1 labels.
  num_classes: number of classes.
  impacted_classes: sorted class ids with a planted effect; class_effects: the planted extra change
    of their expected recall (accuracy units; negative = hurt more than the rest), aligned.
  expected_dense_recall, expected_pruned_recall: [n_classes] exact expected recall of each class.
  expected_normalized_change: [n_classes] exact expected normalized change (pruned - dense) of each
    class under either normalization; 0 for every class when nothing is planted.
  planted_pies: sorted example ids planted as PIEs (exactly the examples whose modal labels differ).
  confusers: [n_examples] the label that receives the wrong votes of each example.
  easy: bool [n_examples], True for easy examples (planted PIEs are False, see ``planted_pies``).
  conditioning_mass: the largest binomial probability that the vote-range conditioning removed for
    any example.  The conditioning makes the models of one example slightly (negatively)
    dependent, which makes the class test conservative: with the defaults and 20 models per
    population it is about 1e-3 and the uncorrected rule flags 4.75% of null classes at alpha =
    0.05 (6,000 tests); with 10 models it is about 0.026 and the rule flags 3.9%.
  ceiling_classes: sorted ids of the ceiling classes (empty by default).
  dense_skill, pruned_skill: [n_dense], [n_pruned] the models' skills (zeros when skill_sd = 0).
  seed: the seed used.
  """

  labels: np.ndarray
  dense_predictions: np.ndarray
  pruned_predictions: np.ndarray
  num_classes: int
  impacted_classes: np.ndarray
  class_effects: np.ndarray
  expected_dense_recall: np.ndarray
  expected_pruned_recall: np.ndarray
  expected_normalized_change: np.ndarray
  planted_pies: np.ndarray
  confusers: np.ndarray
  easy: np.ndarray
  conditioning_mass: float
  ceiling_classes: np.ndarray
  dense_skill: np.ndarray
  pruned_skill: np.ndarray
  seed: int


def _truncated_pmf(q: np.ndarray, n: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
  """Binomial(n, q) pmf conditioned on low <= k <= high, rows [len(q), n + 1]."""
  k = np.arange(n + 1)
  pmf = stats.binom.pmf(k[None, :], n, np.asarray(q, dtype=np.float64)[:, None])
  pmf = np.where((k >= np.asarray(low)[:, None]) & (k <= np.asarray(high)[:, None]), pmf, 0.0)
  total = pmf.sum(axis=1, keepdims=True)
  if np.any(total <= 0):
    raise ValueError("internal error: empty truncated binomial range")
  return pmf / total


def _truncated_mean(q, n: int, low, high) -> np.ndarray:
  """Expected vote fraction k / n of a Binomial(n, q) count conditioned on low <= k <= high."""
  q = np.atleast_1d(np.asarray(q, dtype=np.float64))
  low = np.broadcast_to(low, q.shape)
  high = np.broadcast_to(high, q.shape)
  return _truncated_pmf(q, n, low, high) @ np.arange(n + 1) / n


def _solve_q(target: np.ndarray, n: int, low: int, high: int, what: str) -> np.ndarray:
  """Binomial parameters whose truncated mean vote fraction equals ``target`` (bisection).

  The truncated mean is strictly increasing in q and spans the open interval (low/n, high/n).
  """
  target = np.atleast_1d(np.asarray(target, dtype=np.float64))
  lowest, highest = low / n, high / n
  bad = ~((target > lowest) & (target < highest))
  if bad.any():
    raise ValueError(
        f"{what}: expected vote fraction {target[bad][0]:.4f} is outside ({lowest:.4f}, {highest:.4f}), the "
        f"range reachable with {n} models while keeping the modal label fixed; adjust the accuracies, "
        "accuracy_drop, class_effect or pie_fraction, or use more models"
    )
  lo = np.zeros_like(target)
  hi = np.ones_like(target)
  for _ in range(_BISECTION_STEPS):
    mid = 0.5 * (lo + hi)
    above = _truncated_mean(mid, n, low, high) > target
    hi = np.where(above, mid, hi)
    lo = np.where(above, lo, mid)
  return 0.5 * (lo + hi)


@functools.lru_cache(maxsize=256)
def _solve_scalar(target: float, n: int, low: int, high: int, what: str) -> float:
  """``_solve_q`` of one target, memoized: the scalar solves repeat across studies with the same settings."""
  return float(_solve_q(target, n, low, high, what)[0])


def _count_table(q, low, high, n_models: int):
  """Truncated-binomial count table of per-example (q, low, high) arrays.

  Examples sharing a (q, low, high) triple share a row, so the table stays small.  Returns the row
  of every example, the rows' cdfs [n_rows, n_models + 1] and the largest binomial mass that the
  conditioning removed for any example: the size of the dependence it creates between models.
  """
  triples = np.stack([q, low.astype(np.float64), high.astype(np.float64)], axis=1)
  unique, kind = np.unique(triples, axis=0, return_inverse=True)
  kind = kind.reshape(-1)
  low_u, high_u = unique[:, 1].astype(int), unique[:, 2].astype(int)
  removed = 1.0 - (stats.binom.cdf(high_u, n_models, unique[:, 0]) - stats.binom.cdf(low_u - 1, n_models, unique[:, 0]))
  pmf = _truncated_pmf(unique[:, 0], n_models, low_u, high_u)
  cdf = np.cumsum(pmf, axis=1)
  cdf[:, -1] = 1.0
  return kind, cdf, float(max(0.0, removed.max()))


def _draw_correct(rng, q, low, high, n_models: int, skill=None, skill_sd: float = 0.0):
  """Which models are right (bool [n_examples, n_models]) and the conditioning mass (see ``_count_table``).

  Without ``skill``: a truncated binomial count k per example, given to a uniformly random subset of
  k models.  With ``skill`` (per-model skills [n_models], drawn N(0, skill_sd^2)): model m is right
  on example i when its latent ``skill[m] + eps[i, m]`` (eps ~ N(0, 1)) exceeds a threshold whose
  marginal exceedance probability is q_i, so the count K_i is Binomial(n_models, q_i); when K_i lies
  outside [low_i, high_i] a count k_i is redrawn from the truncated binomial (a maximal coupling:
  k_i has exactly the truncated law, and k_i = K_i on all but the removed mass) and the k_i models
  with the largest latents are right.
  """
  kind, cdf, removed = _count_table(q, low, high, n_models)
  if skill is None:
    u = 1.0 - rng.random(q.shape[0])  # in (0, 1]: k lands inside [low, high] even at the ends
    count = (cdf[kind] < u[:, None]).sum(axis=1)
    keys = rng.random((q.shape[0], n_models))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return ranks < count[:, None], removed
  threshold = np.sqrt(1.0 + skill_sd**2) * stats.norm.isf(q)
  latent = skill[None, :] + rng.standard_normal((q.shape[0], n_models))
  count = (latent > threshold[:, None]).sum(axis=1)
  outside = np.flatnonzero((count < low) | (count > high))
  u = 1.0 - rng.random(outside.size)
  count[outside] = (cdf[kind[outside]] < u[:, None]).sum(axis=1)
  ranks = np.argsort(np.argsort(-latent, axis=1), axis=1)
  return ranks < count[:, None], removed


def _class_ids(value, name: str, num_classes: int, rng, exclude: np.ndarray) -> np.ndarray:
  """Class ids given as a count (drawn at random outside ``exclude``, only then is ``rng`` used) or as ids."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
    pool = np.setdiff1d(np.arange(num_classes), exclude)
    if not 0 <= value <= pool.size:
      raise ValueError(f"{name} must be between 0 and {pool.size}, got {value}")
    if value == 0:
      return np.zeros(0, dtype=np.int64)
    return np.sort(rng.choice(pool, size=int(value), replace=False))
  ids = np.asarray(value, dtype=np.int64).reshape(-1)
  if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
    raise ValueError(f"{name} must be class ids in [0, {num_classes - 1}]")
  if np.unique(ids).size != ids.size:
    raise ValueError(f"{name} has repeated class ids")
  return ids


def _check_arguments(
    num_examples,
    num_classes,
    num_dense,
    num_pruned,
    base_accuracy,
    accuracy_drop,
    pie_fraction,
    pie_strength,
    easy_accuracy,
    hard_accuracy,
    class_spread,
    skill_sd,
    ceiling_accuracy,
):
  """The arguments of `simulate_populations`, checked: (num_classes, num_examples, num_dense, num_pruned) as ints."""
  # pylint: disable=protected-access  (pie.significance's checks, shared on purpose: one message per problem)
  num_classes = significance._check_int(num_classes, "num_classes", 2)
  num_examples = significance._check_int(num_examples, "num_examples", num_classes)
  n_d = significance._check_int(num_dense, "num_dense", 3)
  n_p = significance._check_int(num_pruned, "num_pruned", 3)
  for name, value in (
      ("base_accuracy", base_accuracy),
      ("easy_accuracy", easy_accuracy),
      ("hard_accuracy", hard_accuracy),
      ("pie_strength", pie_strength),
      ("ceiling_accuracy", ceiling_accuracy),
  ):
    significance._check_probability(value, name)
  if not pie_strength > 0.5:
    raise ValueError(f"pie_strength must be > 0.5, got {pie_strength}")
  if not hard_accuracy < 0.5 < easy_accuracy:
    raise ValueError(f"need hard_accuracy < 0.5 < easy_accuracy, got {hard_accuracy} and {easy_accuracy}")
  if not -1.0 < float(accuracy_drop) < 1.0:
    raise ValueError(f"accuracy_drop must be in (-1, 1), got {accuracy_drop}")
  if not 0.0 <= float(pie_fraction) < 1.0:
    raise ValueError(f"pie_fraction must be in [0, 1), got {pie_fraction}")
  if not 0.0 <= float(class_spread) <= 0.5:
    raise ValueError(f"class_spread must be in [0, 0.5], got {class_spread}")
  if not (np.isfinite(float(skill_sd)) and float(skill_sd) >= 0.0):
    raise ValueError(f"skill_sd must be finite and >= 0, got {skill_sd}")
  return num_classes, num_examples, n_d, n_p


def _impacted(impacted_classes, class_effect, num_classes, rng):
  """The impacted classes (sorted), their planted effects, and the effect of every class (0 where none)."""
  if isinstance(impacted_classes, (int, np.integer)) and not isinstance(impacted_classes, (bool, np.bool_)):
    if not 0 <= impacted_classes <= num_classes:
      raise ValueError(f"impacted_classes must be between 0 and {num_classes}, got {impacted_classes}")
    impacted = np.sort(rng.choice(num_classes, size=int(impacted_classes), replace=False))
  else:
    impacted = _class_ids(impacted_classes, "impacted_classes", num_classes, rng, np.zeros(0, dtype=np.int64))
  effect_in = np.asarray(class_effect, dtype=np.float64).reshape(-1)
  if effect_in.size == 1:
    effects = np.full(impacted.size, effect_in[0])
  elif effect_in.size == impacted.size:
    effects = effect_in.copy()
  else:
    raise ValueError(
        f"class_effect must be a scalar or have one value per impacted class ({impacted.size}), got {effect_in.size}"
    )
  if impacted.size and not isinstance(impacted_classes, (int, np.integer)):
    order = np.argsort(impacted)
    impacted, effects = impacted[order], effects[order]
  class_effect_all = np.zeros(num_classes)
  class_effect_all[impacted] = effects
  return impacted, effects, class_effect_all


def _plant_pies(rng, labels, class_size, ceiling, is_ceiling, pie_fraction):
  """The planted PIEs as a mask: spread evenly over the non-ceiling classes (floor or ceil of pie_fraction x class
  size), so that no class has to absorb an unusually large share of them."""
  num_examples = len(labels)
  rest_examples = num_examples - int(class_size[ceiling].sum())
  num_pies = int(round(pie_fraction * rest_examples))
  per_class = np.floor(pie_fraction * class_size).astype(np.int64)
  per_class[ceiling] = 0
  extra = num_pies - int(per_class.sum())
  if extra > 0:
    room = np.flatnonzero((per_class < class_size) & ~is_ceiling)
    per_class[rng.choice(room, size=min(extra, room.size), replace=False)] += 1
  shuffled = rng.permutation(num_examples)
  by_class = shuffled[np.argsort(labels[shuffled], kind="stable")]
  class_start = np.concatenate([[0], np.cumsum(class_size)[:-1]])
  rank_in_class = np.arange(num_examples) - class_start[labels[by_class]]
  planted = np.sort(by_class[rank_in_class < per_class[labels[by_class]]])
  is_pie = np.zeros(num_examples, dtype=bool)
  is_pie[planted] = True
  return is_pie


def simulate_populations(
    num_examples: int,
    num_classes: int,
    num_dense: int,
    num_pruned: int,
    *,
    base_accuracy: float = 0.75,
    accuracy_drop: float = 0.02,
    impacted_classes: Union[int, Sequence[int]] = (),
    class_effect: Union[float, Sequence[float]] = 0.0,
    pie_fraction: float = 0.0,
    pie_strength: float = 0.97,
    easy_accuracy: float = 0.85,
    hard_accuracy: float = 0.15,
    class_spread: float = 0.1,
    skill_sd: float = 0.0,
    ceiling_classes: Union[int, Sequence[int]] = 0,
    ceiling_accuracy: float = 0.995,
    seed: int = 0,
) -> SimulatedStudy:
  """Simulate a dense and a pruned population of classifiers on one eval set (see the module doc).

  Args:
    num_examples, num_classes: eval set size (>= num_classes, so every class is present) and classes.
    num_dense, num_pruned: models per population (>= 3: strict majorities must be reachable).
    base_accuracy: expected mean top-1 of the dense population (ceiling classes included).
    accuracy_drop: expected drop of every class without a planted effect (and of top-1 when nothing
      is planted).
    impacted_classes: how many classes get a planted effect (chosen at random) or their ids.
    class_effect: the extra change of the expected recall of each impacted class (scalar or one per
      impacted class; -0.1 means the class loses 10 points more than the others).
    pie_fraction: fraction of the examples of the non-ceiling classes planted as PIEs (dense right,
      pruned wrong, by 3/4 super-majorities).
    pie_strength: probability that a dense model is right on a planted PIE (and that a pruned
      model is wrong on it) before conditioning on the super-majorities.
    easy_accuracy, hard_accuracy: expected dense vote fraction of the true label on easy (> 1/2)
      and hard (< 1/2) examples.
    class_spread: half-width of the uniform spread of the classes' share of easy examples around
      the share that gives ``base_accuracy`` (classes differ in difficulty).
    skill_sd: standard deviation of the per-model skill, in units of the per-example noise of the
      models' latent (module doc).  0 (default): models are exchangeable on every example and the
      draws are those of earlier versions, bit for bit.
    ceiling_classes: how many classes (chosen at random among the classes without a planted effect)
      or which class ids are ceiling classes: all their examples are easy, with dense expected vote
      fraction ``ceiling_accuracy``, and they hold no planted PIE.
    ceiling_accuracy: expected dense recall of a ceiling class; its pruned expected recall is
      ``ceiling_accuracy - accuracy_drop + effect`` and must stay below 1.
    seed: seed of ``np.random.default_rng``.
  """
  num_classes, num_examples, n_d, n_p = _check_arguments(
      num_examples,
      num_classes,
      num_dense,
      num_pruned,
      base_accuracy,
      accuracy_drop,
      pie_fraction,
      pie_strength,
      easy_accuracy,
      hard_accuracy,
      class_spread,
      skill_sd,
      ceiling_accuracy,
  )

  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_examples) % num_classes)
  confusers = (labels + rng.integers(1, num_classes, size=num_examples)) % num_classes
  class_size = np.bincount(labels, minlength=num_classes)

  impacted, effects, class_effect_all = _impacted(impacted_classes, class_effect, num_classes, rng)
  # Drawn (from rng) only when a number of ceiling classes is asked for: the defaults keep the stream.
  ceiling = np.sort(_class_ids(ceiling_classes, "ceiling_classes", num_classes, rng, impacted))
  if ceiling.size == num_classes:
    raise ValueError("ceiling_classes: at least one class must not be a ceiling class")
  is_ceiling = np.zeros(num_classes, dtype=bool)
  is_ceiling[ceiling] = True

  # Vote-count ranges of each example type.
  maj_d, maj_p = n_d // 2 + 1, n_p // 2 + 1  # strict majority for the true label
  min_d, min_p = (n_d - 1) // 2, (n_p - 1) // 2  # strict majority for the confuser
  super_d, sub_p = -(-3 * n_d // 4), n_p // 4  # planted PIEs: >= 3/4 right in dense, <= 1/4 in pruned

  q_easy_d = _solve_scalar(float(easy_accuracy), n_d, maj_d, n_d, "dense easy examples")
  q_hard_d = _solve_scalar(float(hard_accuracy), n_d, 0, min_d, "dense hard examples")
  q_hard_p = _solve_scalar(float(hard_accuracy), n_p, 0, min_p, "pruned hard examples")
  mean_hard = hard_accuracy
  mean_pie_d = _truncated_mean(pie_strength, n_d, super_d, n_d)[0]
  mean_pie_p = _truncated_mean(1.0 - pie_strength, n_p, 0, sub_p)[0]
  # Dense expected vote fraction and binomial parameter of the easy examples of each class.
  mean_easy_d = np.full(num_classes, easy_accuracy)
  q_easy_d_class = np.full(num_classes, q_easy_d)
  if ceiling.size:
    mean_easy_d[ceiling] = ceiling_accuracy
    q_easy_d_class[ceiling] = _solve_scalar(
        float(ceiling_accuracy), n_d, maj_d, n_d, "ceiling classes in the dense population (ceiling_accuracy)"
    )
    pruned_target = ceiling_accuracy - accuracy_drop + class_effect_all[ceiling]
    bad = ~((pruned_target > maj_p / n_p) & (pruned_target < 1.0))
    if bad.any():
      raise ValueError(
          f"ceiling_classes: class {int(ceiling[bad][0])} would have pruned expected recall "
          f"{pruned_target[bad][0]:.4f} "
          f"(ceiling_accuracy - accuracy_drop + class_effect), outside ({maj_p / n_p:.4f}, 1), the range of a "
          "ceiling class; lower ceiling_accuracy or raise accuracy_drop"
      )

  # Planted PIEs and the easy/hard split of the other examples.
  is_pie = _plant_pies(rng, labels, class_size, ceiling, is_ceiling, pie_fraction)
  planted = np.flatnonzero(is_pie)
  num_pies = planted.size
  rest_examples = num_examples - int(class_size[ceiling].sum())
  # The non-ceiling classes carry what the ceiling classes leave of base_accuracy.
  if ceiling.size:
    base_rest = (base_accuracy * num_examples - ceiling_accuracy * (num_examples - rest_examples)) / rest_examples
  else:
    base_rest = base_accuracy
  pie_share = num_pies / rest_examples
  easy_share = ((base_rest - pie_share * mean_pie_d) / (1.0 - pie_share) - mean_hard) / (easy_accuracy - mean_hard)
  if not 0.0 <= easy_share <= 1.0:
    raise ValueError(
        f"base_accuracy {base_accuracy} cannot be reached with easy_accuracy {easy_accuracy}, hard_accuracy "
        f"{hard_accuracy}, pie_fraction {pie_fraction} and {ceiling.size} ceiling_classes at ceiling_accuracy "
        f"{ceiling_accuracy}"
    )
  class_easy_share = np.clip(easy_share + rng.uniform(-class_spread, class_spread, num_classes), 0.0, 1.0)
  class_easy_share[ceiling] = 1.0  # rng.random() < 1 always: every example of a ceiling class is easy
  easy = ~is_pie & (rng.random(num_examples) < class_easy_share[labels])

  # Per-class shift of the easy examples' pruned accuracy that makes the class move by exactly
  # -accuracy_drop + effect, given its planted PIEs (hard examples do not move).
  easy_count = np.bincount(labels[easy], minlength=num_classes)
  pie_count = np.bincount(labels[is_pie], minlength=num_classes)
  target_change = class_size * (-accuracy_drop + class_effect_all)
  shift_total = target_change - pie_count * (mean_pie_p - mean_pie_d)
  if np.any((easy_count == 0) & (shift_total != 0)):
    bad = int(np.flatnonzero((easy_count == 0) & (shift_total != 0))[0])
    raise ValueError(f"class {bad} has no easy example to carry its accuracy change; use more examples per class")
  with np.errstate(invalid="ignore", divide="ignore"):
    shift = np.where(easy_count > 0, shift_total / np.maximum(easy_count, 1), 0.0)
  q_easy_p = _solve_q(mean_easy_d + shift, n_p, maj_p, n_p, "pruned easy examples")
  mean_easy_p = _truncated_mean(q_easy_p, n_p, maj_p, n_p)

  # Per-example binomial parameters and ranges.
  q_d = np.where(is_pie, pie_strength, np.where(easy, q_easy_d_class[labels], q_hard_d))
  low_d = np.where(is_pie, super_d, np.where(easy, maj_d, 0))
  high_d = np.where(easy | is_pie, n_d, min_d)
  q_p = np.where(is_pie, 1.0 - pie_strength, np.where(easy, q_easy_p[labels], q_hard_p))
  low_p = np.where(easy, maj_p, 0)
  high_p = np.where(is_pie, sub_p, np.where(easy, n_p, min_p))

  # Per-model skills, drawn only when asked for (the defaults keep the stream of earlier versions).
  skill_sd = float(skill_sd)
  if skill_sd > 0.0:
    skill_d = skill_sd * rng.standard_normal(n_d)
    skill_p = skill_sd * rng.standard_normal(n_p)
  else:
    skill_d, skill_p = None, None
  dtype = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32
  right_d, removed_d = _draw_correct(rng, q_d, low_d, high_d, n_d, skill_d, skill_sd)
  right_p, removed_p = _draw_correct(rng, q_p, low_p, high_p, n_p, skill_p, skill_sd)
  dense = np.where(right_d, labels[:, None], confusers[:, None]).T.astype(dtype)
  pruned = np.where(right_p, labels[:, None], confusers[:, None]).T.astype(dtype)

  # Exact expectations.
  mean_d = np.where(is_pie, mean_pie_d, np.where(easy, mean_easy_d[labels], mean_hard))
  mean_p = np.where(is_pie, mean_pie_p, np.where(easy, mean_easy_p[labels], mean_hard))
  expected_dense = np.bincount(labels, weights=mean_d, minlength=num_classes) / class_size
  expected_pruned = np.bincount(labels, weights=mean_p, minlength=num_classes) / class_size
  change = expected_pruned - expected_dense
  overall_change = float(np.sum(class_size * change) / num_examples)

  return SimulatedStudy(
      labels=labels.astype(dtype),
      dense_predictions=dense,
      pruned_predictions=pruned,
      num_classes=num_classes,
      impacted_classes=impacted,
      class_effects=effects,
      expected_dense_recall=expected_dense,
      expected_pruned_recall=expected_pruned,
      expected_normalized_change=change - overall_change,
      planted_pies=planted,
      confusers=confusers.astype(dtype),
      easy=easy,
      conditioning_mass=max(removed_d, removed_p),
      ceiling_classes=ceiling,
      dense_skill=np.zeros(n_d) if skill_d is None else skill_d,
      pruned_skill=np.zeros(n_p) if skill_p is None else skill_p,
      seed=seed,
  )


# --------------------------------------------------------------------------------------------------
# Margin model: populations that share seeds, uniform shifts and class-specific effects
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MarginModel:
  """The eval split and the dense population of ``simulate_margins`` (a probit margin model).

  num_examples, num_classes: balanced labels, as ``simulate_populations``.
  base_accuracy: the dense population's expected top-1 (the class means are shifted together to reach it).
  class_spread: standard deviation of the class means of the margins (classes differ in difficulty).
  margin_sd: standard deviation of the examples' margins around their class's mean.
  skill_sd: standard deviation of a model's skill, added to every margin of the model.
  hard_share: the mean share of *hard* examples, whose margins lie ``hard_offset`` lower than their class's others
    (a skewed, two-humped margin distribution, as real classes with a few ambiguous or mislabeled images have);
    each class's share is uniform in [0, 2 hard_share]. 0: normal margins within every class.
  hard_offset: how much lower the hard examples' margins are.
  """

  num_examples: int = 2000
  num_classes: int = 10
  base_accuracy: float = 0.9
  class_spread: float = 0.6
  margin_sd: float = 1.5
  skill_sd: float = 0.0
  hard_share: float = 0.0
  hard_offset: float = 4.0


@dataclasses.dataclass(frozen=True)
class MarginPopulation:
  """A population of ``simulate_margins`` besides the dense one.

  num_models: its size.
  shift: probit shift of every example's margin (the same for all: a uniform shift; negative = harder).
  class_shifts: optional extra shift per class [num_classes] (class-specific effects).
  example_shifts: optional extra shift per example [num_examples] (e.g. a few examples pushed across the line: PIEs).
  seed_correlation: 0 for independent seeds; otherwise model m shares dense model m's seed (``num_models`` <= the
    dense population's) and its latent noise and skill correlate with that model's by this amount (a sham or a
    level trained from the dense seeds).
  """

  num_models: int
  shift: float = 0.0
  class_shifts: object = None
  example_shifts: object = None
  seed_correlation: float = 0.0


@dataclasses.dataclass(frozen=True)
class MarginStudy:
  """What ``simulate_margins`` returns.

  labels, confusers: int [n_examples] (every wrong vote of an example goes to its confuser).
  margins: [n_examples] the dense population's margin of every example (probit units, before the noise).
  dense_predictions: int [n_dense, n_examples]; predictions: {name: int [n_models, n_examples]} of the other
    populations; twins: {name: int [n_models]} the dense row each model shares its seed with (-1: none).
  dense_expected_recall, expected_recall: [num_classes] and {name: [num_classes]}: the exact expected recall of the
    dense population and of the others (over models, skills and noise).
  uniform_shift_recall: {name: [num_classes]} the expected recall of a population shifted uniformly to the same
    expected top-1 as the named one; ``expected_recall[name] - uniform_shift_recall[name]`` is the class's true
    change beyond a uniform shift (0 everywhere when the population has no class or example shifts).
  """

  labels: np.ndarray
  confusers: np.ndarray
  margins: np.ndarray
  dense_predictions: np.ndarray
  predictions: dict
  twins: dict
  dense_expected_recall: np.ndarray
  expected_recall: dict
  uniform_shift_recall: dict
  num_classes: int
  seed: int


def _expected_correct(margins, shifts, skill_sd):
  """P(right) per example for margins + shifts, marginal over a N(0, skill_sd^2) skill and N(0, 1) noise."""
  return stats.norm.cdf((margins + shifts) / np.sqrt(1.0 + skill_sd**2))


def _uniform_equivalent(margins, target_top1, skill_sd):
  """The uniform shift whose expected top-1 over ``margins`` is ``target_top1`` (bisection)."""
  lo, hi = -20.0, 20.0
  for _ in range(_BISECTION_STEPS):
    mid = 0.5 * (lo + hi)
    if _expected_correct(margins, mid, skill_sd).mean() > target_top1:
      hi = mid
    else:
      lo = mid
  return 0.5 * (lo + hi)


def _population_shifts(population: MarginPopulation, labels, num_classes):
  shifts = np.full(labels.shape, float(population.shift))
  if population.class_shifts is not None:
    class_shifts = np.asarray(population.class_shifts, np.float64)
    if class_shifts.shape != (num_classes,):
      raise ValueError(f"class_shifts must have one value per class ({num_classes}), got shape {class_shifts.shape}")
    shifts += class_shifts[labels]
  if population.example_shifts is not None:
    example_shifts = np.asarray(population.example_shifts, np.float64)
    if example_shifts.shape != labels.shape:
      raise ValueError(f"example_shifts must have one value per example ({labels.size}), got {example_shifts.shape}")
    shifts += example_shifts
  return shifts


def simulate_margins(model: MarginModel, num_dense: int, populations: dict, seed: int = 0) -> MarginStudy:
  """A dense population and others on one eval split, from a probit margin model with optional shared seeds.

  Example i has a margin ``mu_i`` (its class's mean plus ``N(0, margin_sd^2)``); model m of a population is right on
  it when ``mu_i + shift_i + skill_m + noise_mi > 0`` (``noise ~ N(0, 1)``, ``skill ~ N(0, skill_sd^2)``), where
  ``shift_i`` is the population's uniform shift plus its class and example shifts (0 for the dense population), and
  otherwise votes for the example's confuser. A population with ``seed_correlation`` rho shares the dense seeds:
  its model m's noise and skill are ``rho`` times dense model m's plus ``sqrt(1 - rho^2)`` times its own, so that
  twins agree more often than models of independent seeds (as models trained from the same initialization and data
  order do) while every model keeps the marginal law of its population.

  Used for the calibration of the PIE-excess permutation test (a sham and a level sharing the dense seeds), of the
  harm beyond a uniform shift and of the correlations with difficulty (``pie.significance``).
  """
  # pylint: disable=protected-access  (pie.significance's checks, shared on purpose)
  num_classes = significance._check_int(model.num_classes, "num_classes", 2)
  num_examples = significance._check_int(model.num_examples, "num_examples", num_classes)
  num_dense = significance._check_int(num_dense, "num_dense", 1)
  significance._check_probability(model.base_accuracy, "base_accuracy")
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_examples) % num_classes)
  confusers = (labels + rng.integers(1, num_classes, size=num_examples)) % num_classes
  class_means = model.class_spread * rng.standard_normal(num_classes)
  margins = class_means[labels] + model.margin_sd * rng.standard_normal(num_examples)
  if model.hard_share:  # drawn only when asked for: the stream of normal margins stays as it was
    class_hard_share = rng.uniform(0.0, 2.0 * model.hard_share, num_classes)
    margins -= model.hard_offset * (rng.random(num_examples) < class_hard_share[labels])
  margins += _uniform_equivalent(margins, model.base_accuracy, model.skill_sd)
  dtype = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32

  def draw(n, shifts, base_noise=None, base_skill=None, rho=0.0):
    noise = rng.standard_normal((n, num_examples))
    skill = model.skill_sd * rng.standard_normal(n)
    if base_noise is not None:
      noise = rho * base_noise[:n] + np.sqrt(1.0 - rho**2) * noise
      skill = rho * base_skill[:n] + np.sqrt(1.0 - rho**2) * skill
    right = margins[None, :] + shifts[None, :] + skill[:, None] + noise > 0
    return np.where(right, labels[None, :], confusers[None, :]).astype(dtype), noise, skill

  dense, dense_noise, dense_skill = draw(num_dense, np.zeros(num_examples))
  class_size = np.bincount(labels, minlength=num_classes)

  def class_recall(p_right):
    return np.bincount(labels, weights=p_right, minlength=num_classes) / class_size

  out = {"predictions": {}, "twins": {}, "expected_recall": {}, "uniform_shift_recall": {}}
  for name, population in populations.items():
    n = significance._check_int(population.num_models, f"{name}.num_models", 1)
    rho = float(population.seed_correlation)
    if not 0.0 <= rho < 1.0:
      raise ValueError(f"{name}.seed_correlation must be in [0, 1), got {rho}")
    if rho and n > num_dense:
      raise ValueError(f"{name}: {n} models cannot share the seeds of {num_dense} dense models")
    shifts = _population_shifts(population, labels, num_classes)
    predictions, _, _ = draw(n, shifts, dense_noise if rho else None, dense_skill if rho else None, rho)
    out["predictions"][name] = predictions
    out["twins"][name] = np.arange(n) if rho else np.full(n, -1)
    p_right = _expected_correct(margins, shifts, model.skill_sd)
    out["expected_recall"][name] = class_recall(p_right)
    equivalent = _uniform_equivalent(margins, p_right.mean(), model.skill_sd)
    out["uniform_shift_recall"][name] = class_recall(_expected_correct(margins, equivalent, model.skill_sd))
  return MarginStudy(
      labels=labels.astype(dtype),
      confusers=confusers.astype(dtype),
      margins=margins,
      dense_predictions=dense,
      dense_expected_recall=class_recall(_expected_correct(margins, 0.0, model.skill_sd)),
      num_classes=num_classes,
      seed=seed,
      **out,
  )
