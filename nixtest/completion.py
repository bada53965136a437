"""Shell completion: click's, plus package names and `PKG::TEST` from the `--tests` folder.

Enable it with::

    eval "$(_NIXTEST_COMPLETE=bash_source nixtest)"    # bash, in ~/.bashrc
    eval "$(_NIXTEST_COMPLETE=zsh_source nixtest)"     # zsh, in ~/.zshrc
    _NIXTEST_COMPLETE=fish_source nixtest | source     # fish

Bash splits words at ':' (it is in `COMP_WORDBREAKS`), so `hello::gr` would
reach click as three words: nixtest's bash script hands over the whole line
instead, and gives bash back only the part of each completion after the last
word break.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
from click.shell_completion import BashComplete, CompletionItem, add_completion_class, split_arg_string

from nixtest.definitions import DEFINITIONS_FILE

ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: with more packages than this matching, `PKG::` is offered instead of every test
MAX_EXPANDED = 1


def _tests_dir(ctx: click.Context) -> Path:
    value = ctx.params.get("tests_dir") or os.environ.get("NIXTEST_TESTS") or "package_tests"
    return Path(value)


def _packages(tests_dir: Path, prefix: str) -> list[str]:
    try:
        entries = list(os.scandir(tests_dir))
    except OSError:
        return []
    return sorted(
        e.name
        for e in entries
        if e.name.startswith(prefix) and os.path.isfile(os.path.join(e.path, DEFINITIONS_FILE))
    )


def _tests(tests_dir: Path, package: str) -> list[str]:
    """The test names of a package, read leniently: a broken file completes nothing."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(tests_dir / package / DEFINITIONS_FILE, encoding="utf-8") as f:
            data = yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    tests = data.get("tests") if isinstance(data, dict) else None
    return [str(name) for name in tests] if isinstance(tests, dict) else []


def _test_items(tests_dir: Path, incomplete: str) -> list[CompletionItem]:
    package, _, test = incomplete.partition("::")
    return [
        CompletionItem(f"{package}::{name}") for name in _tests(tests_dir, package) if name.startswith(test)
    ]


def complete_tests(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`PKG::TEST` (show, debug, shell)."""
    tests_dir = _tests_dir(ctx)
    if "::" in incomplete:
        return _test_items(tests_dir, incomplete)
    packages = _packages(tests_dir, incomplete)
    if incomplete in packages:
        packages = [incomplete]
    if len(packages) <= MAX_EXPANDED:
        return [item for p in packages for item in _test_items(tests_dir, p + "::")]
    return [CompletionItem(f"{p}::") for p in packages]


def complete_selection(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`PKG` or `PKG::TEST` (run)."""
    tests_dir = _tests_dir(ctx)
    if "::" in incomplete:
        return _test_items(tests_dir, incomplete)
    packages = _packages(tests_dir, incomplete)
    items = [CompletionItem(p) for p in packages]
    if incomplete in packages:
        items += _test_items(tests_dir, incomplete + "::")
    return items


def complete_packages(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`PKG` (list)."""
    return [CompletionItem(p) for p in _packages(_tests_dir(ctx), incomplete)]


_SOURCE_BASH = """\
%(complete_func)s() {
    local IFS=$'\\n'
    local response

    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD \
COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" COMP_WORDBREAKS="$COMP_WORDBREAKS" \
%(complete_var)s=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("$value")
        fi
    done

    return 0
}

%(complete_func)s_setup() {
    complete -o nosort -F %(complete_func)s %(prog_name)s
}

%(complete_func)s_setup;
"""


class NixtestBashComplete(BashComplete):
    """click's bash completion, reading the whole line so that `PKG::TEST` is one word."""

    source_template = _SOURCE_BASH

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop = ""

    def get_completion_args(self) -> tuple[list[str], str]:
        line = os.environ.get("COMP_LINE")
        point = os.environ.get("COMP_POINT", "")
        if line is None or not point.isdigit():
            return super().get_completion_args()
        line = line[: int(point)]
        words = split_arg_string(line)
        complete = not line or line[-1].isspace()
        # `NIXTEST_TESTS=dir nixtest ...`: the assignments hold for the command, so for its completion
        while len(words) > (0 if complete else 1) and ASSIGNMENT.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            os.environ[name] = value
        if complete or not words:
            args, incomplete = words[1:], ""
        else:
            args, incomplete = words[1:-1], words[-1]
        # What bash takes for the word being completed starts after the last word break.
        breaks = [c for c in os.environ.get("COMP_WORDBREAKS", "") if not c.isspace() and c not in "\"'"]
        cut = max((incomplete.rfind(c) for c in breaks), default=-1) + 1
        self.drop = incomplete[:cut]
        return args, incomplete

    def format_completion(self, item: CompletionItem) -> str:
        value = str(item.value)
        if self.drop and value.startswith(self.drop):
            value = value[len(self.drop) :]
        return f"{item.type},{value}"


def install() -> None:
    """Makes `bash` completion nixtest's (click looks completion classes up by shell name)."""
    add_completion_class(NixtestBashComplete, "bash")
