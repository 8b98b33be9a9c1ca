"""The package metadata (pyproject.toml) declares every third-party package the code imports."""
import ast
import os
import re
import sys
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("medssl_jax", "input_pipeline", "configs")  # what `pip install` ships
# import name -> the distribution that provides it, where the two differ
DISTRIBUTION = {"PIL": "pillow", "cv2": "opencv-python-headless", "sklearn": "scikit-learn", "absl": "absl-py",
                "ml_collections": "ml-collections", "orbax": "orbax-checkpoint", "array_record": "array-record",
                "tensorflow": "tensorflow-cpu", "tensorflow_datasets": "tensorflow-datasets", "yaml": "pyyaml"}
# imported by name at run time (importlib), only where the user asks for that format
DYNAMIC = {"torch", "torchvision", "safetensors", "timm"}


def _metadata() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def _name(requirement: str) -> str:
  return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def _third_party_imports() -> dict:
  found = {}
  for pkg in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, pkg)):
      for f in files:
        if not f.endswith(".py"):
          continue
        path = os.path.join(root, f)
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
          if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
          elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module]
          else:
            continue
          for n in names:
            top = n.split(".")[0]
            if top not in sys.stdlib_module_names and top not in PACKAGES:
              found.setdefault(top, os.path.relpath(path, REPO))
  return found


def test_every_imported_package_is_declared():
  meta = _metadata()
  core = {_name(r) for r in meta["dependencies"]}
  extras = {_name(r) for reqs in meta["optional-dependencies"].values() for r in reqs}
  missing = {top: where for top, where in _third_party_imports().items()
             if DISTRIBUTION.get(top, top).lower().replace("_", "-") not in core | extras}
  assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"


def test_the_core_install_has_no_tensorflow_and_the_tf_extra_is_platform_correct():
  meta = _metadata()
  assert not {_name(r) for r in meta["dependencies"]} & {"tensorflow", "tensorflow-cpu", "tensorflow-datasets"}
  tf = meta["optional-dependencies"]["tf"]
  markers = {_name(r): r.partition(";")[2].strip() for r in tf}
  # tensorflow-cpu has Linux x86-64 wheels only: everywhere else the tensorflow package
  assert markers["tensorflow-cpu"] == "sys_platform == 'linux' and platform_machine == 'x86_64'"
  assert markers["tensorflow"] == "sys_platform != 'linux' or platform_machine != 'x86_64'"


def test_no_exact_pins():
  meta = _metadata()
  reqs = list(meta["dependencies"]) + [r for rs in meta["optional-dependencies"].values() for r in rs]
  assert [r for r in reqs if "==" in r.partition(";")[0]] == []  # (markers may compare with ==)


def test_dynamic_imports_are_in_the_torch_extra():
  torch = {_name(r) for r in _metadata()["optional-dependencies"]["torch"]}
  assert DYNAMIC <= torch
