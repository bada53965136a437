"""Running tests: the pool that runs several at once (`pool`), an autopkgtest's profile and skips
(`autopkgtest`), the inputs of a result (`inputs`) and the cache protocol a run asks before
running a test (`cache`)."""
