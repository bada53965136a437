"""What runs inside a test's process tree: the standard library (and plumbum) only."""
