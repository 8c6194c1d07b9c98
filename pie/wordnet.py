"""ImageNet's 1000 classes grouped into WordNet super-categories (dogs, birds, vehicles, ...), derived offline.

An ImageNet class id's synset ("n02085620") is "n" plus the synset's offset in WordNet 3.0's noun database, so the
WordNet hierarchy groups the classes without any download: Debian's package wordnet-base installs that database
(/usr/share/wordnet/data.noun) and TFDS ships the classes' synsets in label order (imagenet2012's label names, from
tensorflow_datasets/datasets/imagenet2012/labels.txt). Each class goes to the first group of `IMAGENET_GROUPS` one
of whose synsets is the class's synset or one of its ancestors (hypernyms and instance hypernyms); classes under none
go to `OTHER`. The order decides overlaps: dogs before the other mammals, vehicles (WordNet's "conveyance", which
holds trains and buses beside "vehicle") before containers, and so on.

`imagenet_grouping()` rebuilds the grouping shipped as pie/class_groups/imagenet2012_wordnet.json
(`write_imagenet_grouping` writes it; tests/test_slices.py checks the shipped file against a rebuild and the groups
against the known id ranges: dogs are ids 151-268, birds 7-24, 80-100 and 127-146).
"""

import json
import os

from pie import io_utils
from pie.errors import PieError

WORDNET_DIR = "/usr/share/wordnet"  # Debian's wordnet-base (WordNet 3.0)
WORDNET_INSTALL = "apt-get install wordnet-base"
# (group name, WordNet 3.0 noun synset offsets), in priority order.
IMAGENET_GROUPS = (
    ("dogs", ("02084071",)),  # dog, domestic dog
    ("other mammals", ("01861778",)),  # mammal
    ("birds", ("01503061",)),  # bird
    ("reptiles", ("01661091",)),  # reptile
    ("amphibians", ("01627424",)),  # amphibian
    ("fish", ("02512053",)),  # fish
    ("insects", ("02159955",)),  # insect
    ("other invertebrates", ("01905661",)),  # invertebrate
    ("people", ("00007846",)),  # person
    ("plants and fungi", ("00017222", "12992868")),  # plant, fungus
    ("food", ("00021265", "07555863", "13134947")),  # food (nutrient), food (solid food), fruit
    ("vehicles", ("03100490",)),  # conveyance (vehicles, trains, buses)
    ("musical instruments", ("03800933",)),  # musical instrument
    ("clothing and footwear", ("03051540", "03380867")),  # clothing, footwear
    ("furniture", ("03405725",)),  # furniture
    ("appliances", ("02729837",)),  # appliance
    ("electronic equipment", ("03278248",)),  # electronic equipment
    ("sports and game equipment", ("03414162", "04285008")),  # game equipment, sports equipment
    ("tools and implements", ("03563967",)),  # implement
    ("structures", ("04341686",)),  # structure, construction
    ("geological formations", ("09287968",)),  # geological formation
    ("containers", ("03094503",)),  # container
    ("devices", ("03183080",)),  # device
    ("coverings", ("03122748",)),  # covering
)
OTHER = "other objects"


def read_noun_hypernyms(wordnet_dir=WORDNET_DIR):
  """{synset offset: [hypernym offsets]} of WordNet's data.noun (hypernyms "@" and instance hypernyms "@i")."""
  path = os.path.join(wordnet_dir, "data.noun")
  if not os.path.exists(path):
    raise PieError(
        f"{path}: missing, WordNet 3.0's noun database ({WORDNET_INSTALL} puts it in {WORDNET_DIR})",
        parameter="wordnet_dir",
    )
  hypernyms = {}
  with open(path, encoding="latin-1") as f:
    for line in f:
      if line.startswith("  "):  # the license header
        continue
      fields = line.split()
      num_words = int(fields[3], 16)
      at = 4 + 2 * num_words
      num_pointers = int(fields[at])
      pointers = [fields[at + 1 + 4 * i : at + 5 + 4 * i] for i in range(num_pointers)]
      hypernyms[fields[0]] = [target for symbol, target, pos, _ in pointers if symbol in ("@", "@i") and pos == "n"]
  return hypernyms


def _ancestors(offset, hypernyms):
  seen, stack = set(), [offset]
  while stack:
    for parent in hypernyms.get(stack.pop(), ()):
      if parent not in seen:
        seen.add(parent)
        stack.append(parent)
  return seen


def tfds_imagenet_synsets():
  """imagenet2012's class synsets in label order, as TFDS ships them (no data needed)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return list(tfds.builder("imagenet2012", data_dir=os.devnull).info.features["label"].names)


def imagenet_grouping(synsets=None, wordnet_dir=WORDNET_DIR):
  """The grouping of pie/class_groups/imagenet2012_wordnet.json: {"dataset", "num_classes", "description",
  "groups": {name: [class ids]}}, every class in exactly one group."""
  synsets = tfds_imagenet_synsets() if synsets is None else list(synsets)
  hypernyms = read_noun_hypernyms(wordnet_dir)
  unknown = [s for s in synsets if s[1:] not in hypernyms]
  if unknown:
    raise PieError(f"synsets {unknown[:3]} are not in WordNet 3.0's nouns ({wordnet_dir})", parameter="synsets")
  groups = {name: [] for name, _ in IMAGENET_GROUPS}
  groups[OTHER] = []
  for class_id, synset in enumerate(synsets):
    lineage = _ancestors(synset[1:], hypernyms) | {synset[1:]}
    name = next((name for name, roots in IMAGENET_GROUPS if lineage & set(roots)), OTHER)
    groups[name].append(class_id)
  return {
      "dataset": "imagenet2012",
      "num_classes": len(synsets),
      "description": (
          "ImageNet's classes by WordNet 3.0 super-category: each class goes to the first group one of whose "
          "synsets is the class's synset or an ancestor (pie/wordnet.py IMAGENET_GROUPS gives the synsets and the "
          f"order); classes under none are '{OTHER}'. Built from Debian's wordnet-base and the synsets TFDS ships "
          "for imagenet2012, by pie.wordnet.write_imagenet_grouping."
      ),
      "groups": groups,
  }


def grouping_json(grouping):
  """A grouping as the text of its JSON file: its fields, then one line per group, in the grouping's order (the order
  of the rows in slice_stats.csv)."""
  lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in grouping.items() if k != "groups"]
  groups = [f"    {json.dumps(name)}: {json.dumps(ids)}" for name, ids in grouping["groups"].items()]
  return "{\n" + "\n".join(lines) + '\n  "groups": {\n' + ",\n".join(groups) + "\n  }\n}\n"


def write_imagenet_grouping(path, wordnet_dir=WORDNET_DIR):
  """Writes `imagenet_grouping()` as JSON (atomically), e.g. to pie/class_groups/imagenet2012_wordnet.json."""
  grouping = imagenet_grouping(wordnet_dir=wordnet_dir)
  io_utils.write_text(path, grouping_json(grouping))
  return grouping
