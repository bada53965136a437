"""The cache a run asks before running a test: injected into the run's context.

The runner knows only this protocol; the history (`nixtest.history`) is one
implementation.  A hit is a recorded pass with the same input key, given back
with its steps and its log; a miss says why the test has to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nixtest.definitions import TestDef
from nixtest.results import TestResult
from nixtest.run.inputs import Inputs


@dataclass
class CacheAnswer:
    #: the recorded pass to report, or None: the test runs
    result: TestResult | None
    #: why the test runs ("no result yet", "zlib1g 1:1.2.13 -> 1:1.3", ...) or why it did not
    reason: str
    #: the recorded pass's full log, if kept
    log: bytes | None = None
    #: the run that recorded the pass
    run_id: str = ""


class ResultCache(Protocol):
    def lookup(self, test: TestDef, inputs: Inputs) -> CacheAnswer:
        """The recorded pass of `inputs.key`, or why there is none to use."""
        ...
