"""medssl-jax: the package metadata is in pyproject.toml; this file lets older tools build it."""
import setuptools

setuptools.setup()
