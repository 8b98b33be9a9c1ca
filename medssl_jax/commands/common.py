"""The runner of every `medssl-jax` command: absl flags, one-line flag errors, `--help` that exits 0.

A command module defines its flags in a function (on `absl.flags.FLAGS`, never at import time),
an absl-style `main(argv)` (argv[1:] are its positional arguments; it returns the exit status or
None for 0) and

  def cli(argv):
    common.run(argv, doc=__doc__, define_flags=_define_flags, main=main)

`run` parses with absl's own machinery (`app.run` with a flags parser of its own) and turns every
flag error (an unknown flag, with the closest of the command's flags; a missing required flag; a
bad value; a config override written with a space instead of `=`; an unknown `--config.` key, with
the closest key of its group) into one line `error: <what>; <the fix>` on stderr and exit status 2.
`--help`, `-h` and `--helpfull` print the command's usage (the first paragraph of its docstring and
its own flags) and exit 0. The command's main then runs under `errors.guard`. When the run ends,
the command's flags are removed again, so that another command can run in the same process.
"""
import difflib
import json
import os
import re
import sys
import textwrap
import traceback
from typing import Callable, NoReturn, Optional, Sequence

from absl import app
from absl import flags
# is_config_flag is meant for users of the library ("without making the whole class public") but
# not re-exported by the package.
from ml_collections.config_flags import config_flags

from medssl_jax import errors
from medssl_jax.commands import console
from medssl_jax import setting_rules
from medssl_jax import settings

FLAGS = flags.FLAGS
HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "-helpfull", "--helpshort", "-helpshort", "-?")
WIDTH = 120
_MULTI_HELP = "repeat this option to specify a list of values"
# What a value of each absl flag type looks like, in the usage and in the fix of a bad value.
_PLACEHOLDERS = {"int": ("INT", "an integer"), "float": ("NUMBER", "a number"),
                 "string": ("VALUE", "a string"), "bool": ("", "true or false"),
                 "comma separated list of strings": ("A,B,...", "comma-separated values"),
                 "multi string": ("VALUE", "a string (repeat the flag for more)"),
                 "config object": ("FILE[:ARG]", "a config file, e.g. configs/demo.py")}


def run(argv: Sequence[str], *, doc: str, define_flags: Callable[[], None],
        main: Callable[[list], Optional[int]], args: str = "") -> NoReturn:
  """Parses `argv` (argv[0] is "medssl-jax <name>") and runs `main`; ends with SystemExit.

  Args:
    argv: the command's argv, argv[0] its name as the user typed it.
    doc: the command module's docstring; its first paragraph is the `--help` text.
    define_flags: defines the command's flags on absl's FLAGS (required ones with
      `flags.mark_flags_as_required`); called once per run, its flags are removed when the run ends.
    main: absl-style main, given [argv[0], *positional arguments]; returns the exit status (None: 0).
      It runs under `errors.guard`: a UserError is one line `error: ...` and exit 2.
    args: the positional arguments for the usage line (e.g. "A.npz B.npz"); "" refuses any, and
      main checks them itself otherwise; "-- ..." takes only the arguments after a `--` (unparsed).
  """
  argv = [str(a) for a in argv]
  before = set(FLAGS)
  saved_argv = sys.argv
  try:
    define_flags()
    configs = [name for name in FLAGS if name not in before and config_flags.is_config_flag(FLAGS[name])]
    if configs:  # every command with a config prints it on request
      flags.DEFINE_bool("print_config", False, "Print the resolved config (every key, with the overrides) and exit.")
    own = [name for name in FLAGS if name not in before]
    if any(a in HELP_ARGS for a in _own_args(argv[1:])):
      print(usage(argv[0], doc, own, args))
      raise SystemExit(0)
    try:
      argv = [argv[0]] + resolve_config_names(argv[1:], configs)
    except errors.FlagError as e:
      _flag_error_exit(e)
    # config_flags finds the `--config.key=value` overrides in sys.argv: make that this command's argv.
    sys.argv = argv
    guarded = errors.guard(main)

    def main_(rest):
      console.quiet(errors.debug())  # short lines, no third-party chatter (console.py)
      if configs and FLAGS.print_config:
        for name in configs:
          print(config_text(FLAGS[name].value))
        return 0
      for name in configs:  # every setting in its range before any work (setting_rules.py)
        try:
          setting_rules.check(FLAGS[name].value)
        except setting_rules.SettingError as e:
          _flag_error_exit(errors.FlagError(str(e)))
      code = guarded(rest)
      return 0 if code is None else code

    try:
      app.run(main_, argv=argv, flags_parser=lambda a: _parse(a, own, args))
    except errors.FlagError as e:  # raised while parsing: nothing to release, no watchdog needed
      _flag_error_exit(e)
  finally:
    sys.argv = saved_argv
    for name in [n for n in FLAGS if n not in before]:  # the command's flags and its config overrides
      delattr(FLAGS, name)
    FLAGS.unparse_flags()
  raise SystemExit(0)  # not reached: app.run exits


def config_text(config) -> str:
  """Every key of a config with its value, one `key = value` per line (the value as JSON), sorted."""
  flat, stack = {}, [("", json.loads(config.to_json_best_effort()))]
  while stack:
    prefix, node = stack.pop()
    for k, v in node.items():
      if isinstance(v, dict):
        stack.append((f"{prefix}{k}.", v))
      else:
        flat[f"{prefix}{k}"] = v
  return "\n".join(f"{k} = {json.dumps(v)}" for k, v in sorted(flat.items()))


def _flag_error_exit(e: errors.FlagError) -> NoReturn:
  if errors.debug():
    traceback.print_exception(e)
  print(f"error: {errors.one_line(e)}", file=sys.stderr, flush=True)
  raise SystemExit(errors.USER_ERROR_EXIT) from None


def call(cli: Callable[[list], None], argv: Sequence[str]) -> int:
  """Runs a command's `cli(argv)` in this process; returns its exit status (for tests and scripts)."""
  try:
    cli(list(argv))
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  return 0


def refuse(message: str) -> NoReturn:
  """A flag error: `run` prints it as one line `error: <message>` on stderr and exits 2."""
  raise errors.FlagError(message)


def _own_args(args: Sequence[str]) -> list:
  """The arguments before a `--` (those after it belong to another program, see local-multiprocess)."""
  args = list(args)
  return args[:args.index("--")] if "--" in args else args


def shipped_configs_dir() -> str:
  """The folder of the config files that come with the package (`configs/`, installed beside it)."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(settings.__file__))), "configs")


def shipped_config_names() -> list:
  folder = shipped_configs_dir()
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return sorted(n[:-3] for n in names if n.endswith(".py") and not n.startswith("_") and n != "presets.py")


def resolve_config_names(args: Sequence[str], names: Sequence[str]) -> list:
  """`args` with each `--<config flag>=NAME[:ARG]` that names a shipped config (`demo`,
  `medssl:chexpert_simclr:local`) rather than an existing file turned into that file's path, so
  the shipped configs work from any folder after `pip install`."""
  out = list(args)
  for i, a in enumerate(out):
    for name in names:
      for form in (f"--{name}=", f"-{name}="):
        if a.startswith(form):
          out[i] = form + resolve_config_name(a[len(form):], name)
      if a in (f"--{name}", f"-{name}") and i + 1 < len(out):
        out[i + 1] = resolve_config_name(out[i + 1], name)
  return out


def resolve_config_name(value: str, flag: str = "config") -> str:
  """A config flag's value: a path as given, or a shipped config's path for a name (see above)."""
  named = value[len("medssl:"):] if value.startswith("medssl:") else value
  path, sep, arg = named.partition(":")
  if os.path.isfile(path) and not value.startswith("medssl:"):
    return value
  stem = path[:-3] if path.endswith(".py") else path
  candidate = os.path.join(shipped_configs_dir(), stem + ".py")
  if stem and "/" not in stem and os.sep not in stem and os.path.isfile(candidate):
    return candidate + sep + arg
  if value.startswith("medssl:"):
    match = difflib.get_close_matches(stem, shipped_config_names(), n=1, cutoff=0.6)
    hint = f"did you mean 'medssl:{match[0]}'?" if match else f"the shipped configs are: {', '.join(shipped_config_names())}"
    refuse(f"--{flag}={value}: no shipped config named {stem!r}; {hint}")
  return value


def _parse(argv: list, own: list, args: str) -> list:
  """absl's parse of `argv`, every error as one line; returns [argv[0], *positional arguments]."""
  command = argv[0]
  see = f"{command} --help lists its flags"
  if "print_config" in own and any(a in ("--print_config", "-print_config") for a in _own_args(argv[1:])):
    for name in own:  # only the config is needed to print it: the other required flags are not
      FLAGS[name].validators = [v for v in FLAGS[name].validators
                                if "must have a value other than None" not in str(getattr(v, "message", ""))]
  for name in own:
    if config_flags.is_config_flag(FLAGS[name]):
      check_config_overrides(_own_args(argv[1:]), name, FLAGS[name].parser)
  try:
    rest = FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    names = own + ["no" + n for n in own if FLAGS[n].boolean]
    match = difflib.get_close_matches(e.flagname, names, n=1, cutoff=0.6)
    value = f"={e.flagvalue.split('=', 1)[1]}" if "=" in (e.flagvalue or "") else ""
    hint = f"did you mean --{match[0]}{value}?" if match else see
    refuse(f"unknown flag --{e.flagname} for {command}; {hint}")
  except flags.IllegalFlagValueError as e:
    missing = [n for n in own if FLAGS[n].value is None and _required(n)]
    if missing and "must have a value other than None" in str(e):
      names = ", ".join(f"--{n}" for n in missing)
      refuse(f"{command} needs {names}; pass {' '.join(f'--{n}=...' for n in missing)} ({see} and what they mean)")
    refuse(f"{_bad_value(e, own)}; {see}")
  except (flags.Error, ValueError, TypeError) as e:
    refuse(f"{errors.one_line(e)}; {see}")
  positional = rest[1:]
  if args.startswith("--"):  # arguments for another program, after a `--`: none before it
    after = len(argv) - argv.index("--") - 1 if "--" in argv[1:] else 0
    positional = positional[:len(positional) - after]
  if (not args or args.startswith("--")) and positional:
    listed = " ".join(repr(a) for a in positional)
    where = "before `--` (the arguments for the module go after it)" if args else "(write every flag as --name=value)"
    refuse(f"unexpected argument(s) {listed} for {command} {where}; {see}")
  return rest


def _required(name: str) -> bool:
  """Whether `flags.mark_flags_as_required` marked the flag (absl's validator for it)."""
  return any("must have a value other than None" in str(getattr(v, "message", "")) for v in FLAGS[name].validators)


def _bad_value(e: flags.IllegalFlagValueError, own: list) -> str:
  """absl's message for a bad value, with what the flag takes."""
  text = errors.one_line(e)
  for name in sorted(set(own) | {n for n in FLAGS if "." in n}, key=len, reverse=True):
    if text.startswith(f"flag --{name}="):
      flag = FLAGS[name]
      if getattr(flag.parser, "enum_values", None):  # absl names the values itself
        return text
      takes = _PLACEHOLDERS.get(flag.flag_type(), (None, None))[1]
      return f"{text} (--{name} takes {takes})" if takes else text
  return text


def check_config_overrides(args: Sequence[str], name: str = "config", parser=None) -> None:
  """Raises errors.FlagError (one line) for a `--<name>.key=value` override that its config cannot take.

  Refused: an override without `=` followed by a value (`--config.train.num_steps 5`), an override
  without --<name>=FILE or before it, a config file that does not load (it is loaded here, before
  absl loads it again), and a key the config does not have (with the closest key of its group: "did you mean 'num_steps'"). `parser` loads the config
  (default: config_flags' file parser).
  """
  parser = parser or config_flags.ConfigFileFlagParser(name=name)
  args = list(args)
  prefix = f"{name}."
  config_at, config_arg = -1, None
  for i, a in enumerate(args):
    if a in (f"--{name}", f"-{name}") and i + 1 < len(args):
      config_at, config_arg = i, args[i + 1]
      break
    if a.startswith((f"--{name}=", f"-{name}=")):
      config_at, config_arg = i, a.split("=", 1)[1]
      break
  overrides = []
  for i, a in enumerate(args):
    bare = a.lstrip("-")
    if not (a.startswith("-") and (bare.startswith(prefix) or bare.startswith("no" + prefix))):
      continue
    key = bare.split("=", 1)[0]
    key = key[len("no" + prefix):] if key.startswith("no" + prefix) else key[len(prefix):]
    if "=" not in a and i + 1 < len(args) and not args[i + 1].startswith("-"):
      refuse(f"{a} {args[i + 1]}: a config override takes its value after '='; write {a}={args[i + 1]}")
    if config_arg is None:
      refuse(f"{a} overrides a value of --{name}, but no --{name}=FILE is given; pass --{name}=FILE before it")
    if i < config_at:
      refuse(f"{a} comes before --{name}={config_arg}; put --{name}=FILE first, then its overrides")
    overrides.append((a, key))
  if config_arg is None:
    return
  config = _load_config(name, config_arg, parser)
  for a, key in overrides:
    value = _check_key(config, key, a, name)
    if "=" not in a and not isinstance(value, bool):  # only a boolean is set by its name alone
      refuse(f"{a} has no value; a config override takes its value after '=': write {a}=VALUE")


def _load_config(name: str, config_arg: str, parser):
  try:
    config = parser.parse(config_arg)
    config.keys()  # a file that did not load is an object that raises on first use
  except Exception as e:  # noqa: BLE001 -- a config file that does not load is the user's to fix
    if errors.debug():
      raise
    path = config_arg.split(":", 1)[0]
    if not os.path.isfile(path):
      shipped = ", ".join(shipped_config_names())
      refuse(f"--{name}={config_arg}: no such config file {path!r}; pass the path of a config file or the name "
             f"of a shipped one ({shipped}), e.g. --{name}=demo")
    cause = e.__context__ if isinstance(e, (TypeError, ValueError)) and e.__context__ else e
    refuse(f"--{name}={config_arg}: the config does not load ({type(cause).__name__}: {errors.one_line(cause)}); "
           f"fix the config file or its argument after ':'")
  return config


def _check_key(config, key: str, arg: str, name: str):
  """The value of `key` in `config`; refuses a key it does not have (a renamed one with its new name)."""
  if key in settings.RENAMED:
    refuse(f"{arg}: {settings.renamed_message(key, settings.RENAMED[key])}")
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    group = ".".join(parts[:i])
    if not hasattr(node, "keys"):
      refuse(f"unknown config key {key!r} in {arg}; {group} is a value ({node!r}), not a group of keys")
    keys = sorted(node.keys())
    if part not in keys:
      match = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
      if match:
        fixed = ".".join(parts[:i] + match + parts[i + 1:])
        value = f"={arg.split('=', 1)[1]}" if "=" in arg else ""
        hint = f"did you mean {match[0]!r} (--{name}.{fixed}{value})?"
      else:
        hint = f"the keys of {group} are: {', '.join(keys)}" if group else f"the config's keys are: {', '.join(keys)}"
      refuse(f"unknown config key {key!r} in {arg}; {hint}")
    node = node[part]
  return node


def usage(command: str, doc: str, own: Sequence[str], args: str = "") -> str:
  """The `--help` text: usage line, the docstring's first paragraph, the command's own flags."""
  first = textwrap.dedent((doc or "").strip("\n").split("\n\n")[0]).strip()
  lines = [f"usage: {command} [flags]{' ' + args if args else ''}", "", first, "", "flags:"]
  rows = []
  for name in own:
    flag = FLAGS[name]
    rows.append((_synopsis(name, flag), _description(name, flag)))
    if config_flags.is_config_flag(flag):
      rows.append((f"--{name}.KEY=VALUE", f"override one value of the --{name} config, e.g. --{name}.seed=1 "
                                          f"(after --{name}=FILE; always with '=')"))
  width = min(max(len(r[0]) for r in rows), 36) if rows else 0
  for left, right in rows:
    indent = " " * (width + 4)
    if len(left) > width:
      lines.append(f"  {left}")
      lines += textwrap.wrap(right, WIDTH, initial_indent=indent, subsequent_indent=indent)
    else:
      wrapped = textwrap.wrap(right, WIDTH - width - 4) or [""]
      lines.append(f"  {left:{width}s}  {wrapped[0]}")
      lines += [indent + w for w in wrapped[1:]]
  lines += ["", "-h, --help: this text. Exit status: 0 done, 1 a bug (traceback), 2 a user error (one line)."]
  return "\n".join(lines)


def _synopsis(name: str, flag) -> str:
  if flag.boolean:
    return f"--[no]{name}"
  values = getattr(flag.parser, "enum_values", None)
  placeholder = "{" + "|".join(values) + "}" if values else _PLACEHOLDERS.get(flag.flag_type(), ("VALUE",))[0]
  return f"--{name}={placeholder}"


def _description(name: str, flag) -> str:
  text = re.sub(r"^<[^>]*>: ", "", " ".join((flag.help or "").split()))  # absl's own additions: the enum values
  if text.endswith(_MULTI_HELP):  # ... and the hint of a repeatable flag
    text = text[:-len(_MULTI_HELP)].rstrip(" ;")
    text += "" if "repeatable" in text else " (repeatable)"
  if _required(name):
    return f"{text} (required)"
  default = flag.default
  if flag.boolean and not default:
    return text
  if default is None or default == "" or default == []:
    return text
  shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
  return f"{text} (default: {shown})"
