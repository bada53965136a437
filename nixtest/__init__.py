"""nixtest: test a package set one package at a time."""

__version__ = "0.1.0"
