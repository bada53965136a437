# ruff: noqa: F821 - local, log, succeeds, fails, envvars and absjoin are nixtest's globals
# A classic nixtest selftest: each linked profile holds exactly its package.
import os

from plumbum.cmd import cat, ls, sort

here = str(local.cwd)
for name, programs in (("hello", ["hello"]), ("sed", ["sed"])):
    linked = os.path.realpath(absjoin(here, name))
    log.info("%s: %s", name, linked)
    assert linked.startswith("/nix/store/"), linked
    assert sorted(os.listdir(absjoin(linked, "bin"))) == programs, os.listdir(absjoin(linked, "bin"))

# The test's own profile has coreutils, not sed: sed is run from its profile.
assert local.which("ls") and not any(os.path.exists(absjoin(d, "sed")) for d in local.env["PATH"].split(":"))
ls["-l", "input.txt"] & succeeds("the skel was copied")
sed = local[absjoin(here, "sed", "bin", "sed")]
word = os.environ["SELFTEST_WORD"]
out = sed["-e", f"s/WORD/{word}/", "input.txt"] & succeeds("sed from its own profile")
assert out == f"hello {word}\n", out
(cat["input.txt"] | sort) & succeeds("a pipeline of the profile's tools")
local[absjoin(here, "hello", "bin", "hello")] & succeeds("hello from its own profile")
ls["no-such-file"] & fails("ls of a missing file fails")
