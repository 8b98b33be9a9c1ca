"""The registry of pretraining methods: name -> method object.

A method file registers its class with `@register`; `get(config.method)` returns it. A method
defined anywhere (a test file, a user's own module imported before the run) registers the same
way, without touching any other module of the library.
"""
from medssl_jax.errors import UserError

_METHODS: dict = {}


def register(cls):
  """Class decorator: registers one instance of `cls` under `cls.name`."""
  if not cls.name:
    raise TypeError(f"{cls.__name__} has no name")
  if cls.name in _METHODS and type(_METHODS[cls.name]) is not cls:
    raise TypeError(f"method name {cls.name!r} is taken by {type(_METHODS[cls.name]).__name__}")
  _METHODS[cls.name] = cls()
  return cls


def unregister(name: str) -> None:
  _METHODS.pop(name, None)


def names() -> tuple:
  return tuple(sorted(_METHODS))


def get(name: str):
  if name == "micle":
    raise UserError("method='micle' is now method='simclr' with pairing='case' (MICLe is SimCLR's objective "
                    "on pairs of two images of one case); set --config.method=simclr --config.pairing=case")
  if name not in _METHODS:
    raise UserError(f"method={name!r} is not a registered pretraining method; known: {', '.join(names())}")
  return _METHODS[name]
