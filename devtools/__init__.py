"""Local servers and fault injection used by tests, benchmarks and the demo; not shipped in the packages."""
