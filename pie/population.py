"""Training a whole study: the grid of sparsity levels x seeds, shared among worker processes.

Each worker process trains models one after another in-process (start-up and imports are paid once per worker,
not once per model). Workers take models through an atomic claim file per model (`<model_dir>/.claim`, created
with O_EXCL), so several workers, or several launchers on one study directory, never train the same model twice. A
claim whose process is gone (same host) is stale and is taken over. Finished models are skipped, so rerunning
the launcher completes an interrupted study.

A study can compare several compression methods (`config.variants`, see pie/variants.py): every trained variant's
models are jobs of the same grid, and the post-training-quantization variants are derived from each finished dense
model after training (pie/ptq.py). With config.init_from_dense (the paired design) every compressed model that trains
starts from the finished dense model of its seed. A job that requires another model (`Job.requires`) is deferred
while that model is being trained: the worker takes the next job, and waits only when every job left is deferred.

The grid is resolved once into `variants.Job`s (method, level, seed, name; `jobs`): a worker hands each job to
`pie.training.train_and_export` or `pie.ptq.derive_ptq` with the config built from it (`job_config`), and checks
whether a model is finished by its name (`pie.model_dir.is_finished`).
"""

import contextlib
import copy
import fcntl
import os
import socket
import time

from pie import io_utils
from pie import model_dir as model_dir_lib
from pie import names
from pie import variants
from pie.errors import PieError

CLAIM_FILE = ".claim"
CLAIM_LOCK_FILE = ".claim.lock"
STUDY_FILE = "study.json"


def grid(config):
  """[(sparsity, seed)] of the study, dense first."""
  levels = sorted(set(float(s) for s in config.sparsity_levels))
  if not levels or levels[0] != 0.0:
    raise PieError(f"config.sparsity_levels must include 0.0 (the dense population), got {levels}")
  for level in levels:
    variants.check_sparsity(level, field="config.sparsity_levels")
  if int(config.num_seeds) < 2:
    raise PieError(f"config.num_seeds must be at least 2 (a population needs two models), got {config.num_seeds}")
  return [(s, seed) for s in levels for seed in range(int(config.num_seeds))]


def jobs(config):
  """Every model of the study (`pie.variants.Job`): dense first, then each trained variant, then derived ones."""
  return variants.study_jobs(config, grid(config))


def model_config(config, sparsity, seed, method=None):
  """One model's config. `method` (a variant name, "magnitude+distill" for a mitigated one) is set only when given and
  not the default, so magnitude studies keep exactly today's configs; "dense" leaves config.method as it is (sparsity
  0 makes the model dense). A config with a `mitigation` field gets the model's mitigation there (None without)."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.sparsity = float(sparsity)
    cfg.seed = int(seed)
    if method not in (None, variants.DENSE) and (method != variants.DEFAULT_METHOD or "method" in cfg):
      cfg.method = method
    if "mitigation" in cfg:
      cfg.mitigation = variants.mitigation_of(method) if method else None
  return cfg


def job_config(config, job):
  """The config of one job's model: its level, seed and method set (see `model_config`)."""
  return model_config(config, job.sparsity, job.seed, job.method)


def model_dir(study_dir, sparsity, seed, method=variants.DEFAULT_METHOD):
  return os.path.join(study_dir, variants.model_name(method, sparsity, seed))


def job_dir(study_dir, job):
  return os.path.join(study_dir, job.name)


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


# The one reader of claim files: "<host> <pid>" of the process that trains the model.
_BEING_WRITTEN = ("", 0)


def _read_claim(directory):
  """(host, pid) of a model directory's claim; None without one; `_BEING_WRITTEN` while its owner writes it (on a
  host that does not share our lock, its content can be read half-written)."""
  path = os.path.join(directory, CLAIM_FILE)
  try:
    with open(path) as f:
      host, pid = f.read().split()
    return host, int(pid)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return _BEING_WRITTEN if os.path.exists(path) else None


def _on_this_host(claim_value):
  return claim_value[0] == socket.gethostname()


def _live(claim_value):
  """A claim counts as live unless its process is known to be gone: a claim from another host cannot be checked."""
  return claim_value == _BEING_WRITTEN or not _on_this_host(claim_value) or _pid_alive(claim_value[1])


def claim_owner(directory):
  """'<host> <pid>' of a live claim on a model directory, or None (no claim, a stale one, or one being written)."""
  owner = _read_claim(directory)
  if owner is None or owner == _BEING_WRITTEN or not _live(owner):
    return None
  return f"{owner[0]} {owner[1]}"


@contextlib.contextmanager
def _claim_lock(directory):
  """Serializes claim checks on one model directory among processes (an flock, freed by the kernel on death).

  O_EXCL alone makes creating a claim atomic, but not taking over a stale one: two processes that both read the same
  dead owner could each remove the claim, and the second would delete the fresh claim of the first, so both would
  train the model. Holding this lock while reading, judging and replacing a claim closes that window.
  """
  with open(os.path.join(directory, CLAIM_LOCK_FILE), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def claim(directory):
  """Atomically claims a model directory for this process; False if a live process holds it."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, CLAIM_FILE)
  me = f"{socket.gethostname()} {os.getpid()}"
  with _claim_lock(directory):
    for _ in range(2):
      try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = _read_claim(directory)
        if owner is None:
          continue  # released between our attempt and our read
        if not _live(owner):
          try:
            os.remove(path)  # stale: its process is gone
          except FileNotFoundError:
            pass
          continue
        return False
      with os.fdopen(fd, "w") as f:
        f.write(me)
      return True
  return False


def release(directory):
  try:
    os.remove(os.path.join(directory, CLAIM_FILE))
  except FileNotFoundError:
    pass


def write_study_file(config, study_dir):
  io_utils.makedirs(study_dir)
  io_utils.write_json(
      os.path.join(study_dir, STUDY_FILE),
      {
          "config": model_dir_lib.config_to_dict(config),
          "config_hash": model_dir_lib.config_hash(config),
          "models": [job.name for job in jobs(config)],
      },
  )


def load_study_config(study_dir):
  """The config the launcher recorded in `<study_dir>/study.json` (a ConfigDict), from which every model's config is
  rebuilt (`job_config`) exactly as the launcher built it."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  path = os.path.join(study_dir, STUDY_FILE)
  try:
    config = io_utils.read_json(path)["config"]
  except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError) as e:
    raise PieError(
        f"{path}: no readable study config ({type(e).__name__}: {e}); it is written by the launcher "
        "(python -m train.population)",
        parameter="study_dir",
    ) from None
  return ml_collections.ConfigDict(config)


def finished_models(config, study_dir):
  """The (sparsity, seed) of the dense and magnitude models whose export is complete."""
  return [(job.sparsity, job.seed) for job in finished_jobs(config, study_dir) if variants.named_by_level(job.method)]


def finished_jobs(config, study_dir):
  """The jobs of the study whose export is complete."""
  return [job for job in jobs(config) if model_dir_lib.is_finished(job_dir(study_dir, job), job.name)]


class _Tee:
  """Writes log lines to a model's train.log."""

  def __init__(self, path):
    self._file = open(path, "a", buffering=1)

  def __call__(self, message):
    self._file.write(message + "\n")

  def close(self):
    self._file.close()


def run_worker(config, study_dir, worker_id=0, strategy=None, log=print, poll_seconds=1.0):
  """Trains (or derives) every unfinished, unclaimed model of the grid in this process; returns the names that
  failed. Each model gets its resolved Job, so training records the launcher's method, level, seed and name.

  Jobs are taken in the grid's order (dense first). A job that requires unfinished models (a derived model, or one
  that starts from its dense twin: `Job.requires`) is deferred while another process trains them, and the worker
  takes the next job instead; it waits only when every job left is deferred. A job whose requirement failed, or is
  unfinished with no live process on it, fails.
  """
  from pie import training  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  failed = []
  representative = {}
  pending = list(jobs(config))
  announced = set()
  while pending:
    job, blocked, unavailable = _next_job(pending, study_dir, failed)
    for lost, requirement in unavailable:
      log(f"[worker {worker_id}] {lost.name}: FAILED: it requires {requirement}, which did not finish")
      failed.append(lost.name)
    if job is None:
      if not blocked:
        break
      for waiting, requirement in blocked:
        if waiting.name not in announced:
          log(f"[worker {worker_id}] {waiting.name}: waiting for {requirement} to finish")
          announced.add(waiting.name)
      time.sleep(poll_seconds)
      continue
    pending.remove(job)
    if not claim(job_dir(study_dir, job)):
      continue  # another process trains it
    failed += _run_claimed(job, config, study_dir, worker_id, strategy, log, representative)
    tf_keras.backend.clear_session()
  training.drop_reused()
  return failed


def _next_job(pending, study_dir, failed):
  """The first pending job that can start (or None), [(job, requirement)] of the jobs waiting for another process,
  and [(job, requirement)] of the jobs that can never start.

  Finished jobs leave `pending`, and so do those that can never start: a requirement failed here, or is unfinished
  with no live process on it and not pending here.
  """
  pending_names = {j.name for j in pending}
  blocked, unavailable = [], []
  for job in list(pending):
    if model_dir_lib.is_finished(job_dir(study_dir, job), job.name):
      pending.remove(job)
      continue
    requirement, available = _unfinished_requirement(job, study_dir, pending_names, failed)
    if requirement is None:
      return job, blocked, unavailable
    if available:
      blocked.append((job, requirement))
    else:
      pending.remove(job)
      unavailable.append((job, requirement))
  return None, blocked, unavailable


def _unfinished_requirement(job, study_dir, pending_names, failed):
  """(the first model `job` requires that is not finished, whether it will be: pending here or being trained by a
  live process); (None, True) when the job can start."""
  for name in job.requires:
    directory = os.path.join(study_dir, name)
    if model_dir_lib.is_finished(directory, name):
      continue
    if name in failed:
      return name, False
    if name in pending_names or _claimed_by_live_process(directory):
      return name, True
    # Checked again: it may have finished and released its claim between the two checks above.
    if not model_dir_lib.is_finished(directory, name):
      return name, False
  return None, True


def _run_claimed(job, config, study_dir, worker_id, strategy, log, representative):
  """Trains or derives one claimed job and releases its claim; returns [its name] if it failed, else []."""
  from pie import ptq  # pylint: disable=g-import-not-at-top
  from pie import training  # pylint: disable=g-import-not-at-top

  cfg = job_config(config, job)
  directory = job_dir(study_dir, job)
  name = job.name
  if model_dir_lib.is_finished(directory, name):
    # Another launcher finished it between our check and our claim: not ours to redo (or to report as trained).
    release(directory)
    return []
  model_log = _Tee(os.path.join(directory, "train.log"))
  try:
    if job.kind == "derive":
      source_dir = os.path.join(study_dir, job.source)
      if "images" not in representative and variants.get_variant(job.method).needs_representative:
        representative["images"] = ptq.representative_images(cfg.data)
      metrics = ptq.derive_ptq(
          cfg, source_dir, directory, representative=representative.get("images"), log=model_log, job=job
      )
    else:
      # Consecutive jobs are seeds of one level: the compiled model is reused, its train step traced once.
      metrics = training.train_and_export(cfg, directory, strategy=strategy, log=model_log, reuse_traced=True, job=job)
    log(
        f"[worker {worker_id}] {name}: top-1 {metrics['top1']:.4f}, sparsity "
        f"{metrics['measured_sparsity']:.4f}, {metrics['wall_seconds']:.1f}s"
    )
    return []
  except Exception as e:  # pylint: disable=broad-except
    # One bad model must not stop the grid: report it, keep going, fail at the end.
    model_log(f"error: {type(e).__name__}: {e}")
    log(f"[worker {worker_id}] {name}: FAILED ({type(e).__name__}: {e}); see {directory}/train.log")
    return [name]
  finally:
    model_log.close()
    release(directory)


def _claimed_by_live_process(directory):
  owner = _read_claim(directory)
  return owner is not None and _live(owner)


def format_seconds(seconds):
  """A duration for progress lines: "42s", "3m05s"."""
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def launch(config, study_dir, num_workers, worker_argv, threads=None, log=print, poll_seconds=2.0):
  """Runs `num_workers` worker processes over the grid and prints models done of total with an ETA.

  Args:
    worker_argv: the command that starts one worker, without its --worker_id flag.
  Returns:
    the number of models that are still unfinished at the end (0 on success).
  """
  import subprocess  # pylint: disable=g-import-not-at-top

  write_study_file(config, study_dir)
  total = len(jobs(config))
  done_before = len(finished_jobs(config, study_dir))
  if done_before == total:
    log(f"all {total} models of {study_dir} are finished")
    return 0
  log(
      f"training {total - done_before} of {total} models in {study_dir} with {num_workers} worker(s)"
      + (f" ({done_before} already finished)" if done_before else "")
  )
  env = dict(os.environ)
  procs = []
  for worker_id in range(num_workers):
    argv = list(worker_argv) + [f"--worker_id={worker_id}"] + ([f"--threads={threads}"] if threads else [])
    procs.append(subprocess.Popen(argv, env=env))
  start, last_done = time.time(), done_before
  try:
    while any(p.poll() is None for p in procs):
      time.sleep(poll_seconds)
      done = len(finished_jobs(config, study_dir))
      if done != last_done:
        last_done = done
        elapsed = time.time() - start
        rate = (done - done_before) / elapsed
        eta = (total - done) / rate if rate > 0 else float("nan")
        log(f"models done {done}/{total}, elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)}")
  except KeyboardInterrupt:
    for p in procs:
      p.terminate()
    raise
  _wait_for_other_launchers(config, study_dir, log, poll_seconds)
  remaining = total - len(finished_jobs(config, study_dir))
  codes = [p.returncode for p in procs]
  if remaining or any(codes):
    log(f"{remaining} of {total} models unfinished; worker exit codes {codes}. Rerun the same command to retry.")
  else:
    log(f"all {total} models finished in {format_seconds(time.time() - start)}")
  return remaining or int(any(codes))


def _held_on_this_host(directory):
  """True if a live process of this host claims the model directory (a claim from elsewhere cannot be checked)."""
  owner = _read_claim(directory)
  return owner is not None and owner != _BEING_WRITTEN and _on_this_host(owner) and _pid_alive(owner[1])


def _wait_for_other_launchers(config, study_dir, log, poll_seconds):
  """Waits while unfinished models are claimed by live processes of this host (another launcher's workers).

  Our workers skip the models another launcher holds, so they can be done before the study is; without this wait
  the launcher would report those models as unfinished, and exit 1, while they are still being trained.
  """
  done = {job.name for job in finished_jobs(config, study_dir)}
  held = [job_dir(study_dir, job) for job in jobs(config) if job.name not in done]
  held = [d for d in held if _held_on_this_host(d)]
  if held:
    log(
        f"waiting for {len(held)} model(s) being trained by another process: "
        + ", ".join(os.path.basename(d) for d in held)
    )
  while held:
    time.sleep(poll_seconds)
    held = [d for d in held if _held_on_this_host(d)]


def dry_run_commands(config, study_dir, config_args, extra_args=()):
  """One `python -m train.train` command per unfinished model, for launching on a cluster or TPUs.

  Models that need other models (`Job.requires`: a dense twin they start from, config.init_from_dense, or what a
  mitigation needs) come after every other command, below a comment line that says to run them once the dense models
  above have finished. Derived (post-training-quantization) models
  are not trained: when some are unfinished, the last command is the launcher itself, which derives them once the
  dense models are done.
  """
  import shlex  # pylint: disable=g-import-not-at-top

  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  study_dir = names.resolve_path(study_dir, "study_dir")  # the commands run elsewhere, from another folder
  # tf.io.gfile: a study on gs:// lists only its unfinished models too (os.path sees no such folder).
  done = {job.name for job in finished_jobs(config, study_dir)} if tf.io.gfile.isdir(study_dir) else set()
  first, after = [], []
  derive = False
  for job in jobs(config):
    if job.name in done:
      continue
    if job.kind == "derive":
      derive = True
      continue
    # The config's default method trains dense and magnitude models: only the others need --config.method.
    method_args = [] if job.method in (variants.DENSE, variants.DEFAULT_METHOD) else [f"--config.method={job.method}"]
    argv = [
        "python",
        "-m",
        "train.train",
        *config_args,
        *method_args,
        f"--config.sparsity={job.sparsity}",
        f"--config.seed={job.seed}",
        f"--workdir={job_dir(study_dir, job)}",
        *extra_args,
    ]
    command = " ".join(shlex.quote(a) for a in argv)
    (after if job.requires else first).append(command)
  commands = list(first)
  if after:
    commands.append(
        f"# the {len(after)} command(s) below need dense models above (their dense twins, config.init_from_dense, or "
        "a mitigation's teacher or class weights): run them once the dense models have finished"
    )
    commands += after
  if derive:
    argv = ["python", "-m", "train.population", *config_args, f"--workdir={study_dir}", "--num_workers=1"]
    commands.append(" ".join(shlex.quote(a) for a in argv))
  return commands
