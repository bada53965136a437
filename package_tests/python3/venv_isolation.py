# ruff: noqa: F821 - local, log, succeeds, fails, envvars and absjoin are nixtest's globals
# A classic nixtest script: `local`, `log`, `succeeds`, `fails`, `envvars`
# and `absjoin` are given by nixtest.  It runs the profile's python3.
import json
import os
import shutil

from plumbum.cmd import python3

here = local.cwd
log.info("working directory %s", here)

# The environment is the profile's, and python3 is the profile's.
profile = os.path.realpath(absjoin(here, "profile"))
assert local.env["PATH"] == envvars(profile)["PATH"], (local.env["PATH"], envvars(profile))
assert str(python3.executable) == absjoin(profile, "bin", "python3"), python3.executable

base = json.loads(python3("probe.py"))
log.info("base interpreter: prefix %s, site %s", base["prefix"], base["site"])
assert base["prefix"] == base["base_prefix"], "the profile's python3 is itself in a venv"

python3["-m", "venv", "--without-pip", "venv"] & succeeds("create an isolated venv")
python3["-m", "venv", "--without-pip", "--system-site-packages", "shared"] & succeeds(
    "create a venv that shares the system site-packages"
)
venv_python = local[absjoin(here, "venv", "bin", "python")]
shared_python = local[absjoin(here, "shared", "bin", "python")]

cfg = (here / "venv" / "pyvenv.cfg").read()
assert "include-system-site-packages = false" in cfg, cfg

inside = json.loads(venv_python["probe.py"] & succeeds("probe the isolated venv"))
log.info("venv: prefix %s, path %s", inside["prefix"], inside["path"])
assert os.path.realpath(inside["prefix"]) == os.path.realpath(absjoin(here, "venv")), inside["prefix"]
assert inside["prefix"] != inside["base_prefix"], "sys.prefix must differ from base_prefix in a venv"
assert os.path.realpath(inside["base_prefix"]) == os.path.realpath(base["prefix"]), inside
leaked = [p for p in inside["path"] if p in base["site"]]
assert not leaked, f"the venv sees the system site-packages: {leaked}"
own_site = [p for p in inside["path"] if p.startswith(inside["prefix"]) and p.endswith("-packages")]
assert own_site, f"the venv has no site-packages of its own on sys.path: {inside['path']}"

# The control: the same check sees the system site-packages when it should.
shared = json.loads(shared_python("probe.py"))
assert [p for p in shared["path"] if p in base["site"]], f"--system-site-packages shared nothing: {shared}"

# Isolation the other way: a package installed in the venv is invisible outside.
import_probe = ["-c", "import probe_pkg; print(probe_pkg.MESSAGE)"]
venv_python[import_probe] & fails("probe_pkg is not importable before it is installed")
shutil.copytree(absjoin(here, "data", "probe_pkg"), os.path.join(own_site[0], "probe_pkg"))
out = venv_python[import_probe] & succeeds("probe_pkg is importable in the venv once installed")
assert out.strip() == "installed in the venv only", out
python3[import_probe] & fails("the base python3 does not see the venv's package")
shared_python[import_probe] & fails("another venv does not see it either")
log.info("venv isolation checked")
