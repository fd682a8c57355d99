"""Host uid claims for process sessions: race-free across processes, kept across restarts, never shared."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from runtime.process.host_uids import UidAllocator, UidRangeError, parse_range


def _claim_many(directory: str, prefix: str, count: int, queue) -> None:
    allocator = UidAllocator(directory, (70000, 70199))
    queue.put([allocator.claim(f"{prefix}-{i}") for i in range(count)])


def test_concurrent_processes_never_get_the_same_uid(tmp_path):
    directory = str(tmp_path / "uids")
    queue = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=_claim_many, args=(directory, f"p{n}", 50, queue))
        for n in range(4)
    ]
    for proc in procs:
        proc.start()
    claimed = [uid for _ in procs for uid in queue.get(timeout=60)]
    for proc in procs:
        proc.join(30)
    assert len(claimed) == 200 and len(set(claimed)) == 200  # the whole range, each uid once
    with pytest.raises(OSError):
        UidAllocator(directory, (70000, 70199)).claim("one-too-many")


def test_a_claim_survives_a_restart_and_only_its_owner_releases_it(tmp_path):
    directory = str(tmp_path / "uids")
    uid = UidAllocator(directory, (70000, 70009)).claim("session-a")
    again = UidAllocator(directory, (70000, 70009))  # a restarted control plane
    assert again.owner(uid) == "session-a" and again.find("session-a") == [uid]
    assert again.claim("session-b") != uid
    again.release(uid, "session-b")  # a stale call naming another session frees nothing
    assert again.owner(uid) == "session-a"
    again.release(uid, "session-a")
    assert again.owner(uid) is None and not os.path.exists(os.path.join(directory, str(uid)))


@pytest.mark.parametrize("text", ["", "abc", "300000-200000", "0-99999", "1000-70000", "65536-4294967295"])
def test_unusable_uid_ranges_are_refused(text):
    with pytest.raises(UidRangeError):
        parse_range(text)


def test_a_uid_range_parses():
    assert parse_range(" 200000 - 299999 ") == (200000, 299999)
