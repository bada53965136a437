"""Running tests: the pool that runs several at once (see `pool`)."""
