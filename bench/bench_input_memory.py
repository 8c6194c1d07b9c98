"""Benchmark: host memory of the ImageNet training input pipeline, against the pipeline it replaced.

The data is a real TFDS-format imagenet2012 written once into --data_dir by tests/tfds_files.py: TFRecord shards
that TFDS's own imagenet2012 builder reads as it reads the prepared dataset, holding full-size JPEGs (64 generated
images at common ImageNet sizes, 400 to 500 pixels on the longer side, 104 KB on average where ImageNet's average is
about 108 KB; cycled over --examples training records in --shards files). `tfds.testing.mock_data` could not be used
as it is: it serves images of 5 to 49 pixels from no file, neither ImageNet's bytes nor its decoded sizes, and
nothing to read per file.

Each pipeline runs in a fresh process that iterates --batches per-replica batches as one host of a v3-8 feeds them
(the config's global batch over --replicas 8: 512 images of 224x224 per batch); the shuffle buffer is full before
the first batch comes out. Peak RSS is the child's own (os.wait4), TensorFlow's runtime included; the RSS after the
imports is printed beside it.

  * new: pie's training input (`Dataset.train_input_fn`) with the config's defaults: files shuffled and
    interleaved, encoded records shuffled, images decoded and augmented after the shuffle, bfloat16 (the config's
    mixed precision);
  * new, --compare_buffer records: the same pipeline with the shuffle buffer of the old default;
  * old: the pipeline before issue #18, reproduced below from pie/data.py as it was: decoded images shuffled, then
    augmented, float32.

Target: the new pipeline with the default buffer at most 2 GB (10^9 bytes) peak RSS; exits 1 on a miss. A child
whose RSS passes --rss_cap_gib stops there and is reported as above it (the old pipeline needs about 11 GiB).

Usage: python bench/bench_input_memory.py [--data_dir DIR] [--batches 12] [--skip_old]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GIB = 2**30
GB = 10**9
CAPPED = 3  # exit status of a child stopped at the RSS cap


def _rss_bytes(field="VmRSS"):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f"no {field} in /proc/self/status")


def _watch(cap_bytes):
  """Ends this process (status CAPPED) when its RSS passes the cap: the old pipeline can take the machine down."""

  def run():
    while True:
      if _rss_bytes() > cap_bytes:
        print(f"stopped at the RSS cap of {cap_bytes / GIB:.1f} GiB", flush=True)
        os._exit(CAPPED)  # pylint: disable=protected-access
      time.sleep(0.05)

  threading.Thread(target=run, daemon=True).start()


def _config(data_dir, buffer):
  from configs import imagenet_resnet50  # pylint: disable=g-import-not-at-top

  config = imagenet_resnet50.get_config()
  config.data.data_dir = data_dir
  if buffer:
    config.data.shuffle_buffer = buffer
  return config


def new_pipeline(config, per_replica, replicas):
  """pie's training input of one host feeding `replicas` replicas."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from pie import data as data_lib  # pylint: disable=g-import-not-at-top
  from pie import devices  # pylint: disable=g-import-not-at-top

  dataset = data_lib.load_dataset(config.data)
  batch_size = per_replica * replicas
  input_fn = dataset.train_input_fn(
      batch_size,
      0,
      0,
      1,
      dataset.steps_per_epoch(batch_size),
      deterministic=config.deterministic,
      image_dtype=devices.input_dtype(config.mixed_precision),
  )
  return input_fn(tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=replicas))


def old_pipeline(config, per_replica, replicas):
  """The training input as pie/data.py built it before issue #18 (one host): decoded images in the shuffle buffer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from pie import preprocess  # pylint: disable=g-import-not-at-top

  cfg, seed, epoch = config.data, 0, 0
  raw = tfds.load(
      cfg.name,
      split=cfg.train_split,
      data_dir=cfg.data_dir,
      shuffle_files=True,
      read_config=tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=None),
  ).map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int64)})
  num_train = tfds.builder(cfg.name, data_dir=cfg.data_dir).info.splits[cfg.train_split].num_examples
  steps = num_train // (per_replica * replicas)
  epoch_seed = seed * 100_003 + epoch
  ds = raw.shuffle(cfg.shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False).repeat()
  ds = ds.take(steps * per_replica * replicas)
  ds = tf.data.Dataset.zip((tf.data.Dataset.from_tensors(tf.constant(epoch_seed, tf.int64)).repeat(), ds.enumerate()))

  def prep(epoch_seed, indexed):
    index, ex = indexed
    image = preprocess.imagenet(ex["image"], training=True, seed=tf.stack([epoch_seed, index]), image_size=224)
    return image, tf.one_hot(ex["label"], 1000)

  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def child(args):
  """Iterates one pipeline's batches in this process."""
  _watch(int(args.rss_cap_gib * GIB))
  import pie  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow_datasets as tfds  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  imported = _rss_bytes()
  config = _config(args.data_dir, args.buffer)
  build = new_pipeline if args.child == "new" else old_pipeline
  ds = build(config, args.per_replica, args.replicas)
  start = time.perf_counter()
  shape = dtype = None
  for images, _ in ds.take(args.batches):
    shape, dtype = images.shape, images.dtype.name
  seconds = time.perf_counter() - start
  shape = "x".join(str(d) for d in shape)
  print(
      f"RESULT imported={imported} peak={_rss_bytes('VmHWM')} seconds={seconds:.1f} batch={shape} dtype={dtype}",
      flush=True,
  )


def measure(args, pipeline, buffer):
  """Runs a child; returns (peak RSS bytes or None when capped, RSS after imports, seconds, output)."""
  command = [sys.executable, os.path.abspath(__file__), f"--child={pipeline}", f"--buffer={buffer}"]
  command += [f"--data_dir={args.data_dir}", f"--batches={args.batches}", f"--per_replica={args.per_replica}"]
  command += [f"--replicas={args.replicas}", f"--rss_cap_gib={args.rss_cap_gib}"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  with tempfile.TemporaryFile("w+") as log:
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    log.seek(0)
    output = log.read()
  code = os.waitstatus_to_exitcode(status)
  if code == CAPPED:
    return None, None, None, output
  if code != 0:
    raise RuntimeError(f"{pipeline} pipeline failed (exit {code}):\n{output[-3000:]}")
  result = [line for line in output.splitlines() if line.startswith("RESULT ")][-1]
  fields = dict(item.split("=", 1) for item in result.split()[1:])
  return (
      usage.ru_maxrss * 1024,
      int(fields["imported"]),
      float(fields["seconds"]),
      f"{fields['batch']} {fields['dtype']}",
  )


def prepare(data_dir, examples, shards):
  """Writes the full-size dataset once (tens of seconds); later runs reuse it."""
  from tests import tfds_files  # pylint: disable=g-import-not-at-top

  marker = os.path.join(data_dir, f"imagenet2012_{examples}_{shards}.done")
  if os.path.exists(marker):
    return
  sizes = [tfds_files.IMAGENET_SIZES[i % len(tfds_files.IMAGENET_SIZES)] for i in range(64)]
  images = tfds_files.jpegs(sizes, seed=0)
  mean_kb = sum(len(b) for b in images) / len(images) / 1e3
  print(f"writing {examples} training records of full-size JPEGs (mean {mean_kb:.0f} KB) into {data_dir} ...")
  tfds_files.write_dataset(data_dir, "imagenet2012", {"train": examples, "validation": shards}, images, shards)
  open(marker, "w").close()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "pie_bench_input_memory"))
  parser.add_argument("--examples", type=int, default=24_576, help="training records (enough for the old buffer)")
  parser.add_argument("--shards", type=int, default=64)
  parser.add_argument(
      "--batches", type=int, default=12, help="per-replica batches iterated (the buffer fills before the first)"
  )
  parser.add_argument("--per_replica", type=int, default=512, help="4096 over the 8 cores of a v3-8")
  parser.add_argument("--replicas", type=int, default=8)
  parser.add_argument("--compare_buffer", type=int, default=16_384, help="the old default shuffle buffer")
  parser.add_argument("--skip_old", action="store_true", help="do not run the old pipeline (about 11 GiB)")
  parser.add_argument("--rss_cap_gib", type=float, default=14.0)
  parser.add_argument("--target_gb", type=float, default=2.0, help="10^9 bytes, the stricter reading of 2 GB")
  parser.add_argument("--child", choices=("new", "old"), help=argparse.SUPPRESS)
  parser.add_argument("--buffer", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(args)
    return 0

  prepare(args.data_dir, args.examples, args.shards)
  default_buffer = _config(args.data_dir, None).data.shuffle_buffer
  print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
  print(
      f"{args.batches} per-replica batches of {args.per_replica} (a host feeding {args.replicas} replicas), "
      f"{args.examples} records in {args.shards} files"
  )
  runs = [("new (default)", "new", default_buffer), ("new", "new", args.compare_buffer)]
  if not args.skip_old:
    runs.append(("old", "old", args.compare_buffer))
  failures = []
  for label, pipeline, buffer in runs:
    peak, imported, seconds, result = measure(args, pipeline, buffer)
    held = "decoded images" if pipeline == "old" else "encoded records"
    if peak is None:
      line = f"above the {args.rss_cap_gib:.1f} GiB cap (stopped)"
    else:
      line = (
          f"peak RSS {peak / GB:.2f} GB = {peak / GIB:.2f} GiB (after the imports {imported / GB:.2f} GB), "
          f"{seconds:.0f} s, batches {result}"
      )
    print(f"{label:14s} shuffle buffer {buffer:>6,} {held:16s}: {line}", flush=True)
    if label == "new (default)" and (peak is None or peak > args.target_gb * GB):
      failures.append(f"new pipeline peak RSS above {args.target_gb} GB")
  for failure in failures:
    print(f"FAILED: {failure}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
