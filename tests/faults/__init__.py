"""Fault tests: real daemons on a full or missing filesystem, on folders they may not read or write, and
on links and special files. A package, so that its conftest does not shadow tests/conftest.py (both
would otherwise be imported as the module `conftest`)."""
