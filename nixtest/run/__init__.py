"""Running tests: the pool that runs several at once (`pool`), an autopkgtest's profile and skips
(`autopkgtest`)."""
