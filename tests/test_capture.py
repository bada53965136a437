"""capture: secret masking across read boundaries, the bounded tail, the pump."""

from __future__ import annotations

import os
import random
import time

import pytest

from nixtest.capture import MASK, Masker, Tail, mask_text, pump

SECRET = "s3cr3t-v@lue"


def feed_all(masker: Masker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


# --------------------------------------------------------------------------- Masker


def test_masks_a_whole_secret() -> None:
    masker = Masker([SECRET])
    assert feed_all(masker, [f"token={SECRET}\n".encode()]) == b"token=***\n"


@pytest.mark.parametrize("cut", range(1, len("a s3cr3t-v@lue b")))
def test_masks_a_secret_cut_at_every_point(cut: int) -> None:
    data = f"a {SECRET} b".encode()
    out = feed_all(Masker([SECRET]), [data[:cut], data[cut:]])
    assert out == b"a *** b"


def test_masks_a_secret_fed_one_byte_at_a_time() -> None:
    data = f"{SECRET}{SECRET} and {SECRET}".encode()
    out = feed_all(Masker([SECRET]), [data[i : i + 1] for i in range(len(data))])
    assert out == b"****** and ***"


def test_random_chunking_never_leaks() -> None:
    rng = random.Random(1)
    secrets = [SECRET, "päss wörd", "xx"]
    pieces = [s.encode() for s in secrets] + [b"noise ", b"x", b"\0\xff\x1b[31m", b"s3cr", b"p\xc3"]
    for _ in range(200):
        data = b"".join(rng.choice(pieces) for _ in range(30))
        cuts = sorted(rng.sample(range(1, len(data)), 5))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        out = feed_all(Masker(secrets), chunks)
        assert out == Masker(secrets).mask(data)
        for secret in secrets:
            assert secret.encode() not in out


def test_longest_secret_wins_when_they_overlap() -> None:
    masker = Masker(["abc", "abcdef"])
    assert feed_all(masker, [b"xabcdefx abc"]) == b"x***x ***"


def test_output_that_cannot_start_a_secret_is_not_held() -> None:
    # Held-back bytes come out later than the other stream's output: only a
    # possible start of a secret may be held.
    masker = Masker([SECRET])
    assert masker.feed(b"token=\n") == b"token=\n"
    assert masker.feed(b"expected 0\n") == b"expected 0\n"
    assert masker.feed(f"got {SECRET}\n".encode()) == b"got ***\n"
    assert masker.feed(b"ends with s3c") == b"ends with "
    assert masker.flush() == b"s3c"
    assert masker.flush() == b""


def test_held_bytes_are_bounded_by_the_longest_secret() -> None:
    masker = Masker(["a" * 10])
    assert masker.feed(b"a" * 9) == b""
    assert masker.feed(b"a" * 5) == b"***"
    assert masker.pending == b"aaaa"
    assert masker.feed(b"a" * 30) == b"*********"
    assert masker.pending == b"aaaa"
    assert masker.flush() == b"aaaa"


def test_no_secrets_passes_everything() -> None:
    masker = Masker(["", ""])
    assert masker.secrets == []
    assert masker.feed(b"anything s3cr") == b"anything s3cr"
    assert masker.flush() == b""


def test_non_ascii_secret() -> None:
    out = feed_all(Masker(["pässwörd"]), ["x pä".encode(), "sswörd y".encode()])
    assert out == b"x *** y"


def test_mask_text() -> None:
    assert mask_text(f"{SECRET} and {SECRET}!", [SECRET, ""]) == "*** and ***!"
    assert mask_text("abcdef abc", ["abc", "abcdef"]) == "*** ***"
    assert mask_text("nothing", []) == "nothing"
    assert MASK == b"***"


# --------------------------------------------------------------------------- Tail


def test_tail_keeps_the_last_bytes_within_its_limit() -> None:
    tail = Tail(100)
    data = bytes(range(256)) * 40
    for i in range(0, len(data), 37):
        tail.add("stdout", data[i : i + 37])
        assert tail.size <= 100
    assert tail.size == 100
    assert tail.total == len(data)
    assert tail.dropped == len(data) - 100
    assert b"".join(d for _, d in tail.chunks) == data[-100:]


def test_tail_one_chunk_larger_than_the_limit() -> None:
    tail = Tail(10)
    tail.add("stderr", b"0123456789abcdef")
    assert list(tail.chunks) == [("stderr", b"6789abcdef")]
    assert tail.dropped == 6


def test_tail_keeps_interleaving_and_merges_runs() -> None:
    tail = Tail(1000)
    for stream, data in [("stdout", b"a"), ("stdout", b"b"), ("stderr", b"E"), ("stdout", b"c")]:
        tail.add(stream, data)
    tail.add("stdout", b"")
    assert list(tail.chunks) == [("stdout", b"ab"), ("stderr", b"E"), ("stdout", b"c")]
    assert tail.text() == "abEc"
    assert tail.text("stdout") == "abc"
    assert tail.text("stderr") == "E"


def test_tail_drops_whole_old_chunks_and_cuts_the_first() -> None:
    tail = Tail(5)
    tail.add("stdout", b"123")
    tail.add("stderr", b"45")
    tail.add("stdout", b"678")
    assert list(tail.chunks) == [("stderr", b"45"), ("stdout", b"678")]
    tail.add("stderr", b"9")
    assert list(tail.chunks) == [("stderr", b"5"), ("stdout", b"678"), ("stderr", b"9")]
    assert tail.size == 5 and tail.total == 9


def test_tail_text_survives_binary() -> None:
    tail = Tail(100)
    tail.add("stdout", b"ok \xff\xfe \x00 \x1b[31m \xe2\x82")
    chunks = tail.text_chunks()
    assert chunks[0][0] == "stdout"
    assert chunks[0][1].startswith("ok \ufffd\ufffd \x00 \x1b[31m ")


# --------------------------------------------------------------------------- pump


def test_pump_reads_both_pipes_to_eof() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a writer of more than a pipe holds: it blocks unless both are read
        os.close(out_r)
        os.close(err_r)
        for _ in range(10):
            os.write(out_w, b"out" * 10000)
            os.write(err_w, b"E" * 30000)
        os._exit(0)
    os.close(out_w)
    os.close(err_w)
    got: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    try:
        left = pump(
            {out_r: "stdout", err_r: "stderr"},
            lambda s, d: got[s].extend(d),
            deadline=time.monotonic() + 20,
        )
    finally:
        os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
    assert left == {}
    assert bytes(got["stdout"]) == b"out" * 100000
    assert bytes(got["stderr"]) == b"E" * 300000


def test_pump_stops_at_the_deadline() -> None:
    r, w = os.pipe()
    try:
        start = time.monotonic()
        left = pump({r: "stdout"}, lambda s, d: None, deadline=start + 0.3)
        assert left == {r: "stdout"}
        assert 0.25 <= time.monotonic() - start < 3
    finally:
        os.close(r)
        os.close(w)


def test_pump_stops_when_asked() -> None:
    r, w = os.pipe()
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    try:
        start = time.monotonic()
        left = pump({r: "stdout"}, lambda s, d: None, stop=stop)
        assert left == {r: "stdout"}
        assert time.monotonic() - start < 3
    finally:
        os.close(r)
        os.close(w)
