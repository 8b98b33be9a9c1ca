"""The Python API of a run: `run(config, workdir)` dispatches on `config.mode` (and the task).

  from medssl_jax import main, settings
  results = main.run(config, "/tmp/run")      # what `medssl-jax train` calls

Each kind of run is one module of `medssl_jax/runs/`: pretraining, classification fine-tuning and
linear evaluation, segmentation, DVME; the command line is `medssl_jax/commands/train.py`.
"""
from medssl_jax import setting_rules
from medssl_jax.errors import UserError
from medssl_jax.runs import classify, dvme, pretrain, segment
from medssl_jax.training import lock


@lock.holds_workdir
def run(config, workdir: str) -> dict:
  """Runs (or resumes) the run `config` describes in `workdir`; returns its results. The run holds
  the workdir's lock (training/lock.py): a second run on the same workdir is refused in one line.
  Every setting is checked against its rule first (setting_rules.py), before any work."""
  setting_rules.check(config)
  if config.mode == "pretrain":
    return pretrain.pretrain(config, workdir)
  if config.mode in ("finetune", "linear_eval"):
    if config.finetune.task == "segmentation":  # a U-Net on image + mask pairs
      return segment.finetune(config, workdir)
    return classify.finetune(config, workdir)
  if config.mode == "dvme":
    return dvme.run(config, workdir)
  raise UserError(f"mode={config.mode!r}: expected 'pretrain', 'finetune', 'linear_eval' or 'dvme'")
