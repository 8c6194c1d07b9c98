"""Training a whole study: the grid of sparsity levels x seeds, shared among worker processes.

Each worker process trains models one after another in-process (start-up and imports are paid once per worker,
not once per model). Workers take models through an atomic claim file per model (`<model_dir>/.claim`, created
with O_EXCL), so several workers, or several launchers on one study directory, never train the same model twice. A
claim whose process is gone (same host) is stale and is taken over. Finished models are skipped, so rerunning
the launcher completes an interrupted study.
"""
import copy
import os
import socket
import time

from pie import io_utils
from pie.errors import PieError

CLAIM_FILE = ".claim"
STUDY_FILE = "study.json"


def grid(config):
  """[(sparsity, seed)] of the study, dense first."""
  levels = sorted(set(float(s) for s in config.sparsity_levels))
  if not levels or levels[0] != 0.0:
    raise PieError(f"config.sparsity_levels must include 0.0 (the dense population), got {levels}")
  if any(not 0.0 <= s < 1.0 for s in levels):
    raise PieError(f"config.sparsity_levels must lie in [0, 1), got {levels}")
  if int(config.num_seeds) < 2:
    raise PieError(f"config.num_seeds must be at least 2 (a population needs two models), got {config.num_seeds}")
  return [(s, seed) for s in levels for seed in range(int(config.num_seeds))]


def model_config(config, sparsity, seed):
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.sparsity = float(sparsity)
    cfg.seed = int(seed)
  return cfg


def model_dir(study_dir, sparsity, seed):
  from pie import training  # pylint: disable=g-import-not-at-top
  return os.path.join(study_dir, training.model_name(sparsity, seed))


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def claim(directory):
  """Atomically claims a model directory for this process; False if a live process holds it."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, CLAIM_FILE)
  me = f"{socket.gethostname()} {os.getpid()}"
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          host, pid = f.read().split()
      except (OSError, ValueError):
        return False  # being written right now by its owner
      if host == socket.gethostname() and not _pid_alive(int(pid)):
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
  from pie import training  # pylint: disable=g-import-not-at-top
  io_utils.makedirs(study_dir)
  io_utils.write_json(os.path.join(study_dir, STUDY_FILE), {
      "config": training.config_to_dict(config), "config_hash": training.config_hash(config),
      "models": [training.model_name(s, seed) for s, seed in grid(config)]})


def finished_models(config, study_dir):
  from pie import training  # pylint: disable=g-import-not-at-top
  return [(s, seed) for s, seed in grid(config)
          if training.is_finished(model_dir(study_dir, s, seed), model_config(config, s, seed))]


class _Tee:
  """Writes log lines to a model's train.log."""

  def __init__(self, path):
    self._file = open(path, "a", buffering=1)

  def __call__(self, message):
    self._file.write(message + "\n")

  def close(self):
    self._file.close()


def run_worker(config, study_dir, worker_id=0, strategy=None, log=print):
  """Trains every unfinished, unclaimed model of the grid in this process; returns the names that failed."""
  from pie import training  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  failed = []
  for sparsity, seed in grid(config):
    cfg = model_config(config, sparsity, seed)
    directory = model_dir(study_dir, sparsity, seed)
    name = training.model_name(sparsity, seed)
    if training.is_finished(directory, cfg) or not claim(directory):
      continue
    model_log = _Tee(os.path.join(directory, "train.log"))
    try:
      metrics = training.train_and_export(cfg, directory, strategy=strategy, log=model_log)
      log(f"[worker {worker_id}] {name}: top-1 {metrics['top1']:.4f}, sparsity "
          f"{metrics['measured_sparsity']:.4f}, {metrics['wall_seconds']:.1f}s")
    except Exception as e:  # pylint: disable=broad-except
      # One bad model must not stop the grid: report it, keep going, fail at the end.
      model_log(f"error: {type(e).__name__}: {e}")
      log(f"[worker {worker_id}] {name}: FAILED ({type(e).__name__}: {e}); see {directory}/train.log")
      failed.append(name)
    finally:
      model_log.close()
      release(directory)
      tf_keras.backend.clear_session()
  return failed


def _format_seconds(seconds):
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
  total = len(grid(config))
  done_before = len(finished_models(config, study_dir))
  if done_before == total:
    log(f"all {total} models of {study_dir} are finished")
    return 0
  log(f"training {total - done_before} of {total} models in {study_dir} with {num_workers} worker(s)"
      + (f" ({done_before} already finished)" if done_before else ""))
  env = dict(os.environ)
  procs = []
  for worker_id in range(num_workers):
    argv = list(worker_argv) + [f"--worker_id={worker_id}"] + ([f"--threads={threads}"] if threads else [])
    procs.append(subprocess.Popen(argv, env=env))
  start, last_done = time.time(), done_before
  try:
    while any(p.poll() is None for p in procs):
      time.sleep(poll_seconds)
      done = len(finished_models(config, study_dir))
      if done != last_done:
        last_done = done
        elapsed = time.time() - start
        rate = (done - done_before) / elapsed
        eta = (total - done) / rate if rate > 0 else float("nan")
        log(f"models done {done}/{total}, elapsed {_format_seconds(elapsed)}, ETA {_format_seconds(eta)}")
  except KeyboardInterrupt:
    for p in procs:
      p.terminate()
    raise
  remaining = total - len(finished_models(config, study_dir))
  codes = [p.returncode for p in procs]
  if remaining or any(codes):
    log(f"{remaining} of {total} models unfinished; worker exit codes {codes}. Rerun the same command to retry.")
  else:
    log(f"all {total} models finished in {_format_seconds(time.time() - start)}")
  return remaining or int(any(codes))


def dry_run_commands(config, study_dir, config_args, extra_args=()):
  """One `python -m train.train` command per unfinished model, for launching on a cluster or TPUs."""
  import shlex  # pylint: disable=g-import-not-at-top
  done = set(finished_models(config, study_dir)) if os.path.isdir(study_dir) else set()
  commands = []
  for sparsity, seed in grid(config):
    if (sparsity, seed) in done:
      continue
    argv = ["python", "-m", "train.train", *config_args, f"--config.sparsity={sparsity}", f"--config.seed={seed}",
            f"--workdir={model_dir(study_dir, sparsity, seed)}", *extra_args]
    commands.append(" ".join(shlex.quote(a) for a in argv))
  return commands


