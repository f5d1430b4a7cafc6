"""keysplit's benchmark suite (see README.md here); installed as ``keysplit_benchmarks``."""
