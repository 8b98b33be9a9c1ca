"""The floor plan holds: no import cycle, nothing imports upward, runs are peers, one command entry.

The layers and what each may import are written down in docs/architecture.md; LAYERS below is the
same table. The graph is read with `ast` from every module of the project, function-local imports
included (a hidden import is still an edge), so a cycle or an upward import fails here, in CI, with
the offending edge named.
"""
import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("medssl_jax", "input_pipeline", "configs", "benchmarks")

# (rank, module-name pattern), lowest first. A module may import modules of its own rank or lower,
# never higher. First match wins; patterns are full-match regular expressions on dotted names.
LAYERS = [
    (0, r"medssl_jax|medssl_jax\.errors|medssl_jax\.settings|medssl_jax\.setting_rules|medssl_jax\.jsonio"),
    (1, r"input_pipeline(\..+)?"),
    (2, r"medssl_jax\.(models|losses|evaluation)(\..+)?"),
    (3, r"medssl_jax\.training(\..+)?"),
    (4, r"medssl_jax\.weights(\..+)?"),
    (5, r"medssl_jax\.methods(\..+)?"),
    (6, r"medssl_jax\.runs(\..+)?"),
    (7, r"medssl_jax\.main"),
    (8, r"configs(\..+)?"),
    (9, r"medssl_jax\.(commands(\..+)?|cli|__main__)"),
    (10, r"benchmarks(\..+)?"),
]
# Runs are peers: a run module imports the shared pieces of runs/, never another run.
RUN_SHARED = {"medssl_jax.runs", "medssl_jax.runs.supervised", "medssl_jax.runs.feature_cache",
              "medssl_jax.runs.linear_probe", "medssl_jax.runs.monitor"}
# The data layer may raise the library's errors and use nothing else of it.
DATA_MAY_IMPORT = {"medssl_jax", "medssl_jax.errors"}


def modules() -> dict:
  out = {}
  for pkg in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, pkg)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(root, f)
          mod = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
          out[mod[: -len(".__init__")] if mod.endswith(".__init__") else mod] = path
  return out


def imports(path: str, mod: str, known: dict) -> set:
  """Project modules imported anywhere in the file (resolved to the longest known prefix)."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  found = set()
  package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
      names = [f"{base}.{a.name}" for a in node.names] + [base]
    else:
      continue
    for n in names:
      while n and n not in known:
        n = n.rpartition(".")[0]
      if n and n != mod:
        found.add(n)
        break
  return found


def rank(mod: str) -> int:
  for r, pattern in LAYERS:
    if re.fullmatch(pattern, mod):
      return r
  raise AssertionError(f"module {mod} is in no layer of tests/test_architecture.py LAYERS")


@pytest.fixture(scope="module")
def graph() -> dict:
  known = modules()
  g = {}
  for mod, path in known.items():
    deps = imports(path, mod, known)
    # a package's __init__ importing its own submodules, and a module importing its parent package
    deps = {d for d in deps if not d.startswith(mod + ".") and not mod.startswith(d + ".")}
    g[mod] = deps
  return g


def _cycles(g: dict) -> list:
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in g.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(g):
    if v not in index:
      visit(v)
  return out


def test_every_module_has_a_layer(graph):
  for mod in graph:
    rank(mod)


def test_no_import_cycle(graph):
  assert _cycles(graph) == []


def test_nothing_imports_upward(graph):
  upward = sorted(f"{m} (layer {rank(m)}) -> {d} (layer {rank(d)})" for m, ds in graph.items() for d in ds
                  if rank(d) > rank(m))
  assert upward == []


def test_the_data_layer_uses_only_the_errors_of_the_library(graph):
  bad = sorted(f"{m} -> {d}" for m, ds in graph.items() if m.startswith("input_pipeline") for d in ds
               if d.startswith("medssl_jax") and d not in DATA_MAY_IMPORT)
  assert bad == []


def test_runs_are_peers(graph):
  bad = sorted(f"{m} -> {d}" for m, ds in graph.items() if m.startswith("medssl_jax.runs.") for d in ds
               if d.startswith("medssl_jax.runs.") and d not in RUN_SHARED)
  assert bad == []


def test_only_the_command_entry_has_a_main_block():
  """`if __name__ == "__main__"` only in medssl_jax/__main__.py (the library) and the studies."""
  found = []
  for mod, path in modules().items():
    if mod.startswith("benchmarks"):
      continue
    if re.search(r"^if __name__ == .__main__.:", open(path, encoding="utf-8").read(), re.M):
      found.append(mod)
  assert found == []


def test_the_checker_fails_on_a_cycle_and_an_upward_import():
  """The checks above can fail: a made-up graph with a cycle and an upward edge is caught."""
  g = {"medssl_jax.models.a": {"medssl_jax.runs.b"}, "medssl_jax.runs.b": {"medssl_jax.models.a"}}
  assert _cycles(g) == [["medssl_jax.models.a", "medssl_jax.runs.b"]]
  assert rank("medssl_jax.runs.b") > rank("medssl_jax.models.a")
