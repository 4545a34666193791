"""Steps for the cluster tests."""

import time


def tag(record):  # type: ignore[no-untyped-def]
    record["v2"] = record["v"] * 2
    return record


def slow(record):  # type: ignore[no-untyped-def]
    time.sleep(0.002)  # a job that runs long enough to kill a TaskManager under it
    return record
