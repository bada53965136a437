# ruff: noqa: F821 - local, log, succeeds, fails, envvars and absjoin are nixtest's globals
# A classic nixtest script: hello from the test's Nix profile, checked against
# the files of its skel.
import os

from plumbum.cmd import hello

profile = os.path.realpath(absjoin(local.cwd, "profile"))
log.info("profile %s", profile)
assert profile.startswith("/nix/store/"), profile
assert local.env["PATH"] == envvars(profile)["PATH"]

with open(absjoin(local.cwd, "expected.txt")) as f:
    expected = f.read()
said = hello & succeeds("hello greets")
assert said == expected, (said, expected)

custom = hello["--greeting=" + os.environ["GREETING"]] & succeeds("a greeting from the environment")
assert custom.strip() == "Hello, Nix!", custom
hello["--no-such-option"] & fails("an unknown option is refused")
log.info("hello works")
