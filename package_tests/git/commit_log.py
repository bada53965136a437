# ruff: noqa: F821 - local, log, succeeds, fails, envvars and absjoin are nixtest's globals
# A classic nixtest script, as written for the 2014 nixtest: the globals
# local, log, succeeds, fails, envvars and absjoin come from nixtest, and
# plumbum.cmd finds programs on the test's PATH (the profile's bin/).
import os

from plumbum.cmd import cat, git, ls

# The id of the first commit: its content, author and dates are all fixed.
FIRST_COMMIT = "b0684eb7331cba7ba8d004f9bbd30d00cfe43b1d"

log.info("testing %s", git("--version").strip())

# PATH is exactly the profile's: git and ls both come from it.
profile = os.path.realpath(absjoin(local.cwd, "profile"))
assert local.env["PATH"] == envvars(profile)["PATH"]
for tool in (git, ls):
    assert str(tool.executable).startswith(profile + "/bin/"), tool.executable

project = absjoin(local.cwd, "project")
# Never look for a repository above the working directory.
local.env["GIT_CEILING_DIRECTORIES"] = str(local.cwd)
with local.cwd(project):
    ls["-l", "src"] & succeeds("the sources were copied into the working directory")
    git["status"] & fails("not a repository yet")
    git["init", "-q", "-b", "main"] & succeeds("init a repository")
    git["add", "README", "src"] & succeeds("stage the files")
    git["commit", "-q", "-m", "Initial commit"] & succeeds("first commit")

    # The sources are writable: change a file, see it in diff, commit it.
    with open(absjoin(project, "README"), "a") as f:
        f.write("A second line.\n")
    git["diff", "--quiet"] & fails("diff sees the change")
    diff = git["diff", "--stat"] & succeeds("diff --stat")
    assert "README | 1 +" in diff, diff
    git["commit", "-q", "-a", "-m", "Second line"] & succeeds("second commit")
    git["diff", "--quiet", "HEAD"] & succeeds("nothing left to commit")

    history = git["log", "--format=%an <%ae> %ad %s", "--date=iso-strict"] & succeeds("log")
    lines = history.strip().splitlines()
    log.info("history:\n%s", history)
    assert lines == [
        "Nix Tester <tester@example.org> 2014-01-01T12:00:00+00:00 Second line",
        "Nix Tester <tester@example.org> 2014-01-01T12:00:00+00:00 Initial commit",
    ], lines
    count = git["rev-list", "--count", "HEAD"] & succeeds("count commits")
    assert count.strip() == "2", count

    # Author, dates and content are fixed, so the first commit's id is too.
    first = git("rev-list", "--max-parents=0", "HEAD").strip()
    log.info("first commit %s", first)
    assert first == FIRST_COMMIT, f"first commit {first}, expected {FIRST_COMMIT}"
    tree = git("cat-file", "-p", first + "^{tree}")
    assert "README" in tree and "src" in tree, tree
    assert "100755 blob" in git("ls-tree", "-r", first, "src"), "the executable bit was lost"

    git["tag", "-a", "v1.0", "-m", "release 1.0"] & succeeds("annotated tag")
    described = git["describe"] & succeeds("describe")
    assert described.strip() == "v1.0", described
    git["checkout", "-q", "-b", "feature", first] & succeeds("branch off the first commit")
    text = cat("README")
    assert "A second line." not in text, text
    git["checkout", "-q", "does-not-exist"] & fails("checkout of a missing branch fails")
    git["checkout", "-q", "main"] & succeeds("back to main")
    assert "A second line." in cat("README")
    git["fsck", "--strict"] & succeeds("the repository is consistent")
log.info("git works")
