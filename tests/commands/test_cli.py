"""The command surface: every command's --help, flag errors as one line and exit 2, did-you-mean for
flags, config keys and sub-commands (medssl_jax/commands/common.py, medssl_jax/cli.py)."""
import importlib
import inspect
import json
import os
import subprocess
import sys

from absl import flags
from ml_collections.config_flags import config_flags
import pytest

from configs import chexpert_simclr
from medssl_jax import errors
from medssl_jax.commands import COMMANDS, common
from medssl_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# `medssl-jax ...` as the console script runs it, reporting whether TensorFlow was imported and
# whether JAX started a backend.
ENTRY = """
import sys
from medssl_jax import cli
try:
  cli.main(["medssl-jax"] + sys.argv[1:])
finally:
  xb = sys.modules.get("jax._src.xla_bridge")
  print(f"tensorflow imported: {'tensorflow' in sys.modules}, jax started: {bool(xb and xb._backends)}", file=sys.stderr)
"""


def medssl(*args, entry=False, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("MEDSSL_DEBUG", None)
  cmd = [sys.executable, "-c", ENTRY] if entry else [sys.executable, "-m", "medssl_jax"]
  return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def own_flags(name):
  """[(flag name, required)] of a command, in the order it defines them."""
  module = importlib.import_module(f"medssl_jax.commands.{COMMANDS[name][0]}")
  before = set(flags.FLAGS)
  module._define_flags()
  try:
    defined = [(n, common._required(n)) for n in flags.FLAGS if n not in before]
    has_config = any(config_flags.is_config_flag(flags.FLAGS[n]) for n, _ in defined)
    return defined + ([("print_config", False)] if has_config else [])  # common.run adds it
  finally:
    for n in [n for n in flags.FLAGS if n not in before]:
      delattr(flags.FLAGS, n)


def wired(name):
  """Commands whose cli runs through common.run (throughput: another change wires it)."""
  module = importlib.import_module(f"medssl_jax.commands.{COMMANDS[name][0]}")
  return "common.run(" in inspect.getsource(module.cli)


def each_command(names=COMMANDS):
  return [pytest.param(n, marks=pytest.mark.xfail(not wired(n), reason=f"{n} does not use common.run yet"))
          for n in names]


@pytest.mark.parametrize("name", each_command())
def test_help_exits_0_with_the_commands_own_flags_without_tensorflow_or_jax(name):
  r = medssl(name, "--help", entry=True)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith(f"usage: medssl-jax {name} [flags]")
  listed = [line.split()[0] for line in r.stdout.splitlines() if line.startswith("  --")]
  names = [n for n, _ in own_flags(name)]
  assert [f.split("=")[0].replace("--[no]", "--") for f in listed if ".KEY=" not in f] == [f"--{n}" for n in names]
  assert r.stderr.splitlines()[-1] == "tensorflow imported: False, jax started: False"


@pytest.mark.parametrize("name", each_command())
def test_unknown_flag_is_one_line_naming_the_closest(name):
  flag = next(n for n, _ in own_flags(name) if n + "s" not in dict(own_flags(name)))
  r = medssl(name, f"--{flag}s=1")
  assert r.returncode == 2, r.stderr
  assert r.stderr == f"error: unknown flag --{flag}s for medssl-jax {name}; did you mean --{flag}=1?\n"


@pytest.mark.parametrize("name", each_command([n for n in COMMANDS if any(req for _, req in own_flags(n))]))
def test_missing_required_flags_are_one_line(name):
  missing = [n for n, req in own_flags(name) if req]
  r = medssl(name)
  assert r.returncode == 2, r.stderr
  assert r.stderr == (f"error: medssl-jax {name} needs {', '.join('--' + n for n in missing)}; pass "
                      f"{' '.join(f'--{n}=...' for n in missing)} (medssl-jax {name} --help lists its flags and "
                      f"what they mean)\n")


TRAIN = ("train", "--config=configs/demo.py", "--workdir=/nonexistent/run")


@pytest.mark.parametrize("args,message", [
    (("--config.train.num_step=5",),
     "unknown config key 'train.num_step' in --config.train.num_step=5; did you mean 'num_steps' "
     "(--config.train.num_steps=5)?"),
    (("--config.train.num_steps", "5"),
     "--config.train.num_steps 5: a config override takes its value after '='; write --config.train.num_steps=5"),
    (("--config.trian.num_steps=5",),
     "unknown config key 'trian.num_steps' in --config.trian.num_steps=5; did you mean 'train' "
     "(--config.train.num_steps=5)?"),
    (("--config.data.zzz=1",), "unknown config key 'data.zzz' in --config.data.zzz=1; the keys of data are: "),
    (("--config.train.num_steps=x",),
     "flag --config.train.num_steps=x: invalid literal for int() with base 10: 'x' (--config.train.num_steps takes "
     "an integer); medssl-jax train --help lists its flags"),
    (("--config.train.num_steps", "--config.seed=1"),
     "--config.train.num_steps has no value; a config override takes its value after '=': write "
     "--config.train.num_steps=VALUE"),
    (("--config.eval.task=multilabel",),
     "--config.eval.task=multilabel: config key 'eval.task' was renamed: it is now finetune.task (CHANGELOG.md "
     "lists the renames)"),
    (("--config.eval.checkpoint=/x",),
     "--config.eval.checkpoint=/x: config key 'eval.checkpoint' was renamed: it is now train.init_checkpoint"),
    (("--config.train.temperature=0.2",),
     "--config.train.temperature=0.2: config key 'train.temperature' was renamed: it is now simclr.temperature "
     "or moco.temperature (the method's own group)"),
    (("--config.aug.color_prob=1.5",),
     "aug.color_prob=1.5: expected a number in [0, 1]; set --config.aug.color_prob to such a value"),
    (("--config.optim.name=adamw",), "optim.name='adamw': expected one of 'lars', 'sgd', 'adam'; set --config.optim.name"),
    (("--multihost=maybe",), "flag --multihost=maybe: "),
    (("more",), "unexpected argument(s) 'more' for medssl-jax train (write every flag as --name=value); "
                "medssl-jax train --help lists its flags"),
])
def test_train_flag_mistakes_are_one_line(args, message):
  r = medssl(*TRAIN, *args)
  assert r.returncode == 2, r.stderr
  assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"error: {message}"), r.stderr


@pytest.mark.parametrize("args,message", [
    (("--config=configs/nope.py", "--workdir=/nonexistent/run"),
     "--config=configs/nope.py: no such config file 'configs/nope.py'; pass the path of a config file or the name "
     f"of a shipped one ({', '.join(common.shipped_config_names())}), e.g. --config=demo"),
    (("--config=medssl:chexpret_simclr:local", "--workdir=/nonexistent/run"),
     "--config=medssl:chexpret_simclr:local: no shipped config named 'chexpret_simclr'; did you mean "
     "'medssl:chexpert_simclr'?"),
    (("--config.seed=1", "--config=configs/demo.py", "--workdir=/nonexistent/run"),
     "--config.seed=1 comes before --config=configs/demo.py; put --config=FILE first, then its overrides"),
    (("--workdir=/nonexistent/run", "--config.seed=1"),
     "--config.seed=1 overrides a value of --config, but no --config=FILE is given; pass --config=FILE before it"),
])
def test_config_file_mistakes_are_one_line(args, message):
  r = medssl("train", *args)
  assert (r.returncode, r.stderr) == (2, f"error: {message}\n")


def test_a_config_file_setting_a_renamed_key_is_one_line(tmp_path):
  cfg = tmp_path / "old.py"
  cfg.write_text("from medssl_jax.settings import finalize, get_base_config\n\n\ndef get_config():\n"
                 "  c = get_base_config()\n  c.train.num_steps = 5\n  c.eval.val_split = ''\n  return finalize(c)\n")
  r = medssl("train", f"--config={cfg}", "--workdir=/nonexistent/run")
  assert (r.returncode, r.stderr) == (2, f"error: --config={cfg}: the config does not load (ValueError: config key "
                                         f"'eval.val_split' was renamed: it is now finetune.val_split (CHANGELOG.md "
                                         f"lists the renames)); fix the config file or its argument after ':'\n")


def test_shipped_configs_are_found_by_name():
  names = common.shipped_config_names()
  assert {"demo", "base", "chexpert_simclr", "moco_v2", "folder_simclr"} <= set(names)
  assert not {"presets", "__init__"} & set(names)
  path = os.path.join(REPO, "configs", "chexpert_simclr.py")
  assert common.resolve_config_name("chexpert_simclr:local") == f"{path}:local"
  assert common.resolve_config_name("medssl:chexpert_simclr:local") == f"{path}:local"
  assert common.resolve_config_name("chexpert_simclr.py") == path
  assert common.resolve_config_name("configs/demo.py") == "configs/demo.py"  # an existing path stays as given
  assert common.resolve_config_name("nope") == "nope"  # left to the no-such-file refusal


def test_print_config_prints_the_resolved_config_from_any_folder(tmp_path):
  """--config by name from a folder without configs/, --print_config without the other required flags."""
  r = medssl("train", "--config=medssl:chexpert_simclr:local", "--config.train.num_steps=7", "--print_config",
             cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr
  printed = dict(line.split(" = ", 1) for line in r.stdout.splitlines())
  want = chexpert_simclr.get_config("local")
  assert len(printed) == len(loop.flatten(json.loads(want.to_json_best_effort())))  # every key
  assert (printed["train.num_steps"], printed["simclr.temperature"]) == ("7", "0.1")
  assert (json.loads(printed["data.path"]), printed["data.image_size"]) == (want.data.path, "28")
  assert not os.listdir(tmp_path)  # printed only: no workdir, nothing written


def test_every_config_command_checks_its_overrides():
  r = medssl("preview", "--config=configs/demo.py", "--out=/nonexistent/p", "--config.aug.blur_prb=0")
  assert (r.returncode, r.stderr) == (2, "error: unknown config key 'aug.blur_prb' in --config.aug.blur_prb=0; "
                                         "did you mean 'blur_prob' (--config.aug.blur_prob=0)?\n")


def test_medssl_jax_help_lists_every_command():
  r = medssl("--help")
  assert r.returncode == 0
  listed = [line.split()[0] for line in r.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()]
  assert listed == list(COMMANDS)


def test_unknown_sub_command_names_the_closest():
  r = medssl("trian", "--config=configs/demo.py")
  assert (r.returncode, r.stderr) == (
      2, "error: unknown command 'trian'; did you mean 'train'? (medssl-jax --help lists the commands)\n")


def test_usage_is_the_first_paragraph_and_the_flags():
  r = medssl("compare", "--helpfull")
  assert r.returncode == 0 and medssl("compare", "-h").stdout == r.stdout
  assert r.stdout.splitlines()[:3] == [
      "usage: medssl-jax compare [flags] A.npz B.npz", "",
      "Paired comparison of two models on one test set (Azizi et al. 2021 App. B.1.1)."]
  assert "  --num_replicates=INT  Paired bootstrap replicates (0: as the two runs recorded, else 1000). (default: 0)" \
      in r.stdout.splitlines()
  assert "  --[no]by_case         Resample cases instead of images." in r.stdout.splitlines()
  assert "--verbosity" not in r.stdout  # absl's own flags are not the command's


def test_a_command_runs_again_in_one_process(tmp_path, capsys):
  """common.run removes the command's flags when it ends: two runs (and another command) in one process."""
  from medssl_jax.commands import select_best, sweep
  args = ["medssl-jax sweep", "--config=configs/x.py", f"--workdir_root={tmp_path}", "--grid=optim.base_lr=1,2"]
  assert common.call(sweep.cli, args) == 0
  assert common.call(sweep.cli, args + ["--grid=optim.weight_decay=0,1"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 2 + 4
  with pytest.raises(SystemExit) as e:
    select_best.cli(["medssl-jax select-best", "--helpfull"])
  assert e.value.code == 0 and "--sweep_dir=VALUE" in capsys.readouterr().out
  assert "grid" not in flags.FLAGS and "sweep_dir" not in flags.FLAGS


def test_config_overrides_are_checked_as_a_library_call():
  with pytest.raises(errors.FlagError, match=r"^unknown config key 'train\.bacth_size' in --config\.train\.bacth_size=8; "
                                             r"did you mean 'batch_size' \(--config\.train\.batch_size=8\)\?$"):
    common.check_config_overrides(["--config=configs/demo.py", "--config.train.bacth_size=8"])
  common.check_config_overrides(["--config=configs/demo.py", "--config.train.batch_size=8", "--noconfig.aug.flip"])
