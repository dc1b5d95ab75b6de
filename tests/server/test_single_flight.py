"""The worklist is computed once for every app asking at the same moment, and never answers with data older
than the request (server.single_flight)."""

from __future__ import annotations

import threading
import time

import pytest

from server.single_flight import SingleFlight


class Counter:
    """A computation that takes a while and answers with the version of the data it read when it started."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.version = 0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.calls += 1
            seen = self.version
        time.sleep(self.seconds)
        return seen


def ask_at_once(flight: SingleFlight[int], n: int) -> list[int]:
    answers: list[int] = [None] * n  # type: ignore[list-item]
    start = threading.Barrier(n)

    def ask(i: int) -> None:
        start.wait()
        answers[i] = flight.get()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return answers


def test_twenty_requests_at_once_cost_at_most_two_computations():
    compute = Counter(0.2)
    answers = ask_at_once(SingleFlight(compute), 20)
    assert answers == [0] * 20
    assert 1 <= compute.calls <= 2


def test_a_request_made_after_a_change_never_gets_the_answer_from_before_it():
    compute = Counter(0.3)
    flight = SingleFlight(compute)
    early = threading.Thread(target=flight.get)
    early.start()
    time.sleep(0.1)       # the first computation has read version 0 and is still running
    compute.version = 1   # a study changes
    assert flight.get() == 1
    early.join(5)
    assert compute.calls == 2


def test_an_error_reaches_every_waiter_and_the_next_request_computes_again():
    calls = []

    def failing() -> int:
        calls.append(1)
        time.sleep(0.1)
        if len(calls) == 1:
            raise RuntimeError("index unreachable")
        return 7

    flight = SingleFlight(failing)
    with pytest.raises(RuntimeError, match="index unreachable"):
        flight.get()
    assert flight.get() == 7
