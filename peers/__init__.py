"""Drivers for the real DICOM peers that tests and benchmarks run against (dev only, never shipped).

Both `tests/` and `bench/` import this package, and neither may import the other, so it sits at the repo
root beside them. It is not one of the packages `pyproject.toml` installs (its `packages.find` patterns
do not match it) and no runtime package imports it; it needs the standard library and pydicom.
"""
