"""The result model's plain form: what the history, report.json and pytest-xdist encode."""

from __future__ import annotations

import dataclasses
import json

from nixtest.results import Step, TestResult


def _rich() -> TestResult:
    shared = {"zlib1g": "1:1.2.13", "libc6": "2.36-9"}
    return TestResult(
        package="zlib",
        test="import",
        outcome="failed",
        message="the step failed",
        kind="classic",
        command=["/out/rerun/zlib/import", "--result", "/tmp/r"],
        exit_code=1,
        output=[("stdout", "hi\n"), ("stderr", "oops\n")],
        output_dropped=3,
        start=1.5,
        end=2.25,
        steps=[
            Step("true", command="true", exit_code=0, output=[("stdout", "x")], start=1.6, end=1.7),
            Step("false", command="false", exit_code=1, outcome="failed", expected="exit 0", detail="d"),
        ],
        wrapper="/out/rerun/zlib/import",
        warnings=["collision"],
        properties={"Depends": "zlib1g"},
        input_key="abc",
        inputs={"format": 1, "files": {"a.py": "x123"}, "packages": shared, "shown": shared},
        packages=shared,
        earlier_attempts=["attempt 1: failed: no"],
        attempts=2,
        flaky=True,
        change="newly-failing",
    )


def test_to_dict_equals_asdict_and_copies_what_a_caller_may_change() -> None:
    result = _rich()
    data = result.to_dict()
    assert data == dataclasses.asdict(result)
    assert json.dumps(data) == json.dumps(dataclasses.asdict(result))
    # the containers are the dict's own: changing them changes no result
    data["steps"][0]["output"].append(("stdout", "more"))
    data["packages"]["new"] = "1"
    data["command"].append("x")
    data["inputs"]["extra"] = 1
    assert result.steps[0].output == [("stdout", "x")]
    assert "new" not in result.packages and "extra" not in result.inputs
    assert result.command == ["/out/rerun/zlib/import", "--result", "/tmp/r"]


def test_json_round_trip_keeps_every_field() -> None:
    result = _rich()
    again = TestResult.from_json(result.to_json())
    assert json.dumps(dataclasses.asdict(again)) == json.dumps(dataclasses.asdict(result))
    assert again.steps[1].outcome == "failed" and again.output[1] == ("stderr", "oops\n")
