"""The cache over the history: a recorded pass of the same input key, or why the test runs."""

from __future__ import annotations

from nixtest.definitions import TestDef
from nixtest.history.store import HistoryStore, KeyHistory, ResultRecord
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
        # the key's outcomes from the index; a record is read only for a hit (every
        # record of the key, decoded, cost a warm run more with every run recorded)
        history = self.store.key_history(inputs.key)
        if history.count and not history.is_flaky and not history.other:
            # the pass that ran (a cached one only repeats it), the latest first
            source = self.store.key_source(inputs.key)
            assert source is not None
            record_id, run_id = source
            result = self.store.result(record_id)
            log = self.store.log(record_id)
            return CacheAnswer(result, f"passed in run {run_id} with the same inputs", log, str(run_id))
        return CacheAnswer(None, self.why(test, inputs, history))

    def why(self, test: TestDef, inputs: Inputs, history: KeyHistory | None = None) -> str:
        """Why the test must run: what changed since its last result, or how that result ended."""
        if history is None:
            history = self.store.key_history(inputs.key)
        if history.count and history.is_flaky:
            return "flaky: passed and failed with these inputs"
        latest = self.store.test_results(test.package, test.name, self.set_spec, limit=1)
        if not latest:
            if history.count:
                return f"{self.store.key_latest_outcome(inputs.key)} last time"
            return "no result yet"
        last = latest[0]
        ended = "" if last.outcome == "passed" else f"{last.outcome} last time"
        if last.input_key == inputs.key:
            return ended or "inputs unchanged"
        what = ", ".join(changes(last.inputs, inputs.parts))
        return f"{what} ({ended})" if ended else what
