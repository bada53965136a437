"""The cache over the history: a recorded pass of the same input key, or why the test runs."""

from __future__ import annotations

from nixtest.definitions import TestDef
from nixtest.history.store import HistoryStore, ResultRecord
from nixtest.run.cache import CacheAnswer
from nixtest.run.inputs import Inputs, changes


def is_flaky(records: list[ResultRecord]) -> bool:
    """Results of one input key that both passed and failed, or a pass that needed retries."""
    passed = any(r.outcome == "passed" for r in records)
    failed = any(r.is_bad for r in records)
    return (passed and failed) or any(r.flaky for r in records)


class HistoryCache:
    """`nixtest.run.cache.ResultCache` answered from the history of one package set."""

    def __init__(self, store: HistoryStore, set_spec: str) -> None:
        self.store = store
        self.set_spec = set_spec

    def lookup(self, test: TestDef, inputs: Inputs) -> CacheAnswer:
        records = self.store.results_with_key(inputs.key)
        if records and not is_flaky(records) and all(r.outcome == "passed" for r in records):
            # the pass that ran (a cached one only repeats it), the latest first
            source = next((r for r in records if not r.cached), records[0])
            result = self.store.result(source.id)
            log = self.store.log(source.id)
            return CacheAnswer(
                result, f"passed in run {source.run_id} with the same inputs", log, str(source.run_id)
            )
        return CacheAnswer(None, self.why(test, inputs, records))

    def why(self, test: TestDef, inputs: Inputs, records: list[ResultRecord] | None = None) -> str:
        """Why the test must run: what changed since its last result, or how that result ended."""
        if records is None:
            records = self.store.results_with_key(inputs.key)
        if records and is_flaky(records):
            return "flaky: passed and failed with these inputs"
        latest = self.store.test_results(test.package, test.name, self.set_spec, limit=1)
        if not latest:
            if records:
                return f"{records[0].outcome} last time"
            return "no result yet"
        last = latest[0]
        ended = "" if last.outcome == "passed" else f"{last.outcome} last time"
        if last.input_key == inputs.key:
            return ended or "inputs unchanged"
        what = ", ".join(changes(last.inputs, inputs.parts))
        return f"{what} ({ended})" if ended else what
