"""An autopkgtest's way through a run: its profile and skips before, its undeclared commands after.

The profile is what the test declares and nothing more: the packages its
`Depends:` chooses, everything they depend on (transitively), and the set's
essential packages.  A test that fails because it ran a command the profile
does not have, while the host has it, names the command and the package that
provides it: a test dependency the control file does not declare, which Debian's
own tool only finds in a fresh container.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from nixtest.definitions import TestDef, display_path
from nixtest.errors import DefinitionError, UnknownPackage
from nixtest.packagesets import dependency_closure, essential_packages
from nixtest.results import TestResult
from nixtest.run.inputs import inputs_of
from nixtest.sources.autopkgtest import resolve_depends, skip_reason, undeclared
from nixtest.wrappers import WrapperPlan, write_wrapper

if TYPE_CHECKING:
    from nixtest.runner import Context, Prepared

ARTIFACTS = "artifacts"
#: the skip message of a needs-root test run as another user (the wrapper says the same)
NEEDS_ROOT = "restriction needs-root: it runs only as root"


def properties(test: TestDef) -> dict[str, str]:
    """What the reports show of the stanza."""
    spec = test.autopkgtest
    assert spec is not None
    found = {
        "autopkgtest": f"{display_path(test.file)}, stanza {spec.stanza}",
        "Depends": spec.depends_text or "(none)",
    }
    if spec.command is not None:
        found["Test-Command"] = spec.command
    if spec.restrictions:
        found["Restrictions"] = ", ".join(spec.restrictions)
    if spec.features:
        found["Features"] = ", ".join(spec.features)
    if spec.classes:
        found["Classes"] = ", ".join(spec.classes)
    return found


def _skipped(test: TestDef, reason: str, facts: dict[str, str]) -> TestResult:
    from nixtest.runner import error_result

    result = error_result(test, reason)
    result.outcome, result.properties = "skipped", facts
    return result


def prepare_autopkgtest(test: TestDef, ctx: Context) -> Prepared | TestResult:
    """The test's profile and wrapper; a skipped result when it cannot run here."""
    from nixtest.runner import Prepared

    spec = test.autopkgtest
    assert spec is not None
    facts = properties(test)
    reason = skip_reason(spec)
    if not reason and "needs-root" in spec.restrictions and os.geteuid() != 0:
        # decided here too, not only by the wrapper: a pass recorded as root must not
        # be taken from the cache for a run as another user
        reason = NEEDS_ROOT
    if reason:
        return _skipped(test, reason, facts)
    chosen, missing = resolve_depends(spec, ctx.pset)
    if missing:
        what = "; ".join(missing)
        return _skipped(test, f"Depends: {what}: not in the package set {ctx.set_spec!r}", facts)
    try:
        packages = dependency_closure(ctx.pset, [*chosen, *essential_packages(ctx.pset)])
        profile = ctx.profile(tuple(packages))
    except UnknownPackage as exc:
        raise DefinitionError(
            display_path(test.file), test.name, "Depends", f"package {exc.name!r} is not in the package set"
        ) from None
    if chosen:
        facts["Depends resolved"] = ", ".join(f"{p} {ctx.pset.version(p)}".strip() for p in chosen)
    facts["profile packages"] = str(len(packages))
    plan = WrapperPlan(
        test=test,
        profile=profile.path,
        python=ctx.python,
        artifacts=ctx.out / ARTIFACTS / test.package / test.name,
    )
    wrapper = write_wrapper(plan, ctx.out)
    inputs = inputs_of(test, ctx.pset, ctx.timeout, ctx.python, packages=packages)
    # Profile collisions are left out: among a closure of Debian packages
    # (alternatives, diversions) they are the rule, not news.
    return Prepared(test=test, plan=plan, wrapper=wrapper, warnings=[], properties=facts, inputs=inputs)


def after_autopkgtest(result: TestResult, prepared: Prepared, ctx: Context) -> None:
    """After a failure: the commands it missed that the host has; empty artifacts go."""
    artifacts = prepared.plan.artifacts
    if artifacts is not None:
        with contextlib.suppress(OSError):
            artifacts.rmdir()  # only when empty: what the test left is a build product
    if result.outcome not in ("failed", "xfailed"):
        return
    text = result.output_text()
    with contextlib.suppress(OSError), open(result.log_path, encoding="utf-8", errors="replace") as log:
        text += log.read()[-65536:]
    found = undeclared(text, prepared.plan.profile, ctx.pset)
    if not found:
        return
    names = ", ".join(f"{command} ({path}, package {package})" for command, path, package in found)
    result.message += f"; it ran commands its profile does not have: {names}: an undeclared test dependency"
    result.properties["undeclared"] = ", ".join(f"{package} ({command})" for command, _, package in found)
