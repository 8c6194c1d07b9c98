"""The triage export: every PIE of the report's per-level view as a record for human review in a labelling tool.

The paper found that over half of the PIEs have a wrong or ambiguous label. triage/pies.csv and triage/pies.json list
them (fields `outputs.TRIAGE_FIELDS`), and triage/images holds each one's PNG, so the folder can be imported into a
labelling tool (Label Studio, a spreadsheet) or moved and zipped as a whole.

pies.csv is meant for spreadsheets, which evaluate a cell that starts with `=`, `+`, `-` or `@`: its text cells go
through `pie.names.spreadsheet_cell` (a class name `=HYPERLINK(...)` is written `'=HYPERLINK(...)`, shown as text,
never evaluated). pies.json, for programs, holds the exact names. Image file names are made of the level and the
example id, never of a name from the metadata.
"""

import json
from pathlib import Path

import pandas as pd

from pie import io_utils
from pie import names
from pie import outputs
from pie.report import load

TRIAGE_FIELDS = outputs.TRIAGE_FIELDS


def triage_image_name(sparsity, example_id):
  """File name of a PIE's image in triage/images: one per (level, example)."""
  return f"{load.level_key(sparsity)}_ex{int(example_id)}.png"


def triage_records(data):
  """One record per PIE per level for a labelling tool, in pies.csv order; pie_stability None where unknown."""
  records = []
  has_stability = "pie_stability" in data.pies
  for row in data.pies.itertuples(index=False):
    key = (float(row.sparsity), int(row.example_id))
    has_image = data.images is not None and key in data.images
    stability = float(row.pie_stability) if has_stability and not pd.isna(row.pie_stability) else None
    records.append(
        {
            "example_id": int(row.example_id),
            "sparsity": float(row.sparsity),
            "image": f"{outputs.TRIAGE_IMAGES_DIR}/{triage_image_name(*key)}" if has_image else None,
            "label": int(row.label),
            "label_name": str(row.label_name),
            "dense_modal": int(row.dense_modal),
            "dense_modal_name": str(row.dense_modal_name),
            "pruned_modal": int(row.pruned_modal),
            "pruned_modal_name": str(row.pruned_modal_name),
            "dense_modal_share": float(row.dense_modal_share),
            "pruned_modal_share": float(row.pruned_modal_share),
            "modal_tie": bool(row.modal_tie),
            "pie_stability": stability,
        }
    )
  return records


def write_triage(analysis_dir):
  """Writes triage/pies.csv, triage/pies.json and triage/images/*.png for human review; returns the triage folder.

  Image paths in the records are relative to the triage folder, so the folder can be moved or zipped as a whole.
  Without pies.tfrecord the records have no image (empty in the CSV, null in the JSON).
  """
  return write_triage_files(load.load_analysis(analysis_dir))


def write_triage_files(data):
  """The triage export of an already loaded analysis folder (`write_triage` loads it first); returns its folder."""
  triage_dir = data.directory / outputs.TRIAGE_DIR
  images_dir = triage_dir / outputs.TRIAGE_IMAGES_DIR
  images_dir.mkdir(parents=True, exist_ok=True)
  records = triage_records(data)
  wanted = set()
  for record in records:
    if record["image"] is not None:
      name = Path(record["image"]).name
      wanted.add(name)
      io_utils.write_bytes(str(images_dir / name), data.images[(record["sparsity"], record["example_id"])].png)
  # Images of PIEs from an earlier run of the analysis in this folder would be mistaken for current ones.
  for stale in images_dir.glob("s*_ex*.png"):
    if stale.name not in wanted:
      stale.unlink()
  table = pd.DataFrame(records, columns=list(outputs.TRIAGE_FIELDS))
  io_utils.write_text(str(triage_dir / outputs.TRIAGE_CSV), names.spreadsheet_frame(table).to_csv(index=False))
  io_utils.write_text(str(triage_dir / outputs.TRIAGE_JSON), json.dumps(records, indent=1) + "\n")
  return triage_dir
