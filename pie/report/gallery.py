"""The PIE gallery's data: every PIE of the report's per-level view with its labels, shares and image, embedded in
the page as JSON for report.js to filter and page through.
"""

import base64
import io

import pandas as pd

from pie.report import load

# Gallery tiles are this many CSS pixels wide; larger images are shrunk to it before embedding (the full-size image
# is in triage/images), smaller ones are upscaled by the browser with nearest-neighbour sampling.
GALLERY_TILE_PX = 112


def tile_uri(image, max_side):
  """A data: URI for a gallery tile (compare.html's too): the original PNG when small, else a PNG shrunk to max_side
  pixels."""
  png = image.png
  if max(image.width, image.height) > max_side:
    from PIL import Image  # pylint: disable=import-outside-toplevel

    with Image.open(io.BytesIO(png)) as original:
      thumb = original.convert("RGB" if image.channels >= 3 else "L")
      thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
      buffer = io.BytesIO()
      thumb.save(buffer, format="PNG", optimize=True)
      png = buffer.getvalue()
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gallery_payload(data, page_size=60, max_image_bytes=20 * 2**20):
  """The gallery's data as embedded in the page: levels, classes and one entry per PIE per level.

  Images are embedded as PNG data: URIs, shrunk to twice the tile size when larger. If they would exceed
  `max_image_bytes` of page text (default 20 MiB, so the report can still be mailed), they are shrunk to the tile size,
  and if that is still too much, only an even spread is embedded: the first PIE of every class at every level, then
  the second, and so on. The others show "image not embedded"; the triage folder has every image at full size.
  """
  if page_size < 1:
    raise ValueError(f"page_size must be at least 1, got {page_size}")
  if max_image_bytes < 0:
    raise ValueError(f"max_image_bytes must be non-negative, got {max_image_bytes}")
  has_stability = "pie_stability" in data.pies
  pies = data.pies.sort_values(["sparsity", "label", "example_id"], kind="stable").reset_index(drop=True)
  entries, images = [], {}
  for index, row in enumerate(pies.itertuples(index=False)):
    key = (float(row.sparsity), int(row.example_id))
    entries.append(_entry(row, key, has_stability))
    image = data.images.get(key) if data.images is not None else None
    if image is not None:
      images[index] = image
  # Spread the budget: rank r of every (level, class) before rank r + 1 of any.
  rank = pies.groupby(["sparsity", "label"], sort=False).cumcount().to_numpy()
  omitted = embed_images(entries, images, rank, max_image_bytes)
  levels = [
      {"key": load.level_key(s), "label": load.level_label(s), "count": int((data.pies["sparsity"] == s).sum())}
      for s in data.pruned_sparsities
  ]
  return {
      "page_size": int(page_size),
      "tile_px": GALLERY_TILE_PX,
      "has_images": data.images is not None,
      "omitted_images": omitted,
      "class_names": [str(c) for c in data.study["class_names"]],
      "levels": levels,
      "pies": entries,
  }


def _entry(row, key, has_stability):
  """One PIE as report.js reads it (short keys: the page holds thousands); its image is added by `embed_images`."""
  entry = {
      "level": load.level_key(key[0]),
      "id": key[1],
      "y": int(row.label),
      "yn": str(row.label_name),
      "d": int(row.dense_modal),
      "dn": str(row.dense_modal_name),
      "p": int(row.pruned_modal),
      "pn": str(row.pruned_modal_name),
      "ds": round(float(row.dense_modal_share), 4),
      "ps": round(float(row.pruned_modal_share), 4),
      "tie": bool(row.modal_tie),
      "img": None,
  }
  if has_stability and not pd.isna(row.pie_stability):
    entry["st"] = round(float(row.pie_stability), 4)
  return entry


def embed_images(entries, images, rank, max_image_bytes):
  """Puts the images ({entry index: PieImage}) into their entries within the budget, lowest rank first; returns how
  many were left out."""
  uris = {i: tile_uri(image, 2 * GALLERY_TILE_PX) for i, image in images.items()}
  if sum(map(len, uris.values())) > max_image_bytes:
    uris = {i: tile_uri(image, GALLERY_TILE_PX) for i, image in images.items()}
  used = omitted = 0
  for i in sorted(uris, key=lambda i: (rank[i], i)):
    if used + len(uris[i]) <= max_image_bytes:
      entries[i].update(img=uris[i], w=images[i].width, h=images[i].height)
      used += len(uris[i])
    else:
      omitted += 1
  return omitted
