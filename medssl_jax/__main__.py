"""`python -m medssl_jax <command> ...`: the same as the `medssl-jax` console script."""
from medssl_jax import cli

cli.main()
