"""Run tools: grids of runs (sweep), selection on validation (select_best), N local processes as
N hosts (local_multiprocess). Each is a `medssl-jax` subcommand; see medssl_jax/cli.py."""
