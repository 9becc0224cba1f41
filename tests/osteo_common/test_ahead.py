import threading

import pytest

from osteo_common.ahead import made_ahead


def test_items_come_in_order_and_the_producer_stays_within_its_depth():
    made: list[int] = []
    seen_ahead: list[int] = []

    def produce():
        for i in range(50):
            made.append(i)
            yield i

    out = []
    for item in made_ahead(produce(), depth=2):
        seen_ahead.append(len(made) - len(out) - 1)  # made but not yet handed over, besides this one
        out.append(item)
    assert out == list(range(50))
    # at most depth items wait in the queue, plus one the producer holds while the queue is full
    assert max(seen_ahead) <= 3


def test_a_producer_error_reaches_the_consumer_at_its_item():
    def produce():
        yield 1
        yield 2
        raise ValueError("bad item 3")

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item in made_ahead(produce()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_and_joins_the_producer():
    produced: list[int] = []

    def produce():
        for i in range(10_000):
            produced.append(i)
            yield i

    before = {t.name for t in threading.enumerate()}
    it = made_ahead(produce(), depth=1, name="osteo-test-ahead")
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert "osteo-test-ahead" not in {t.name for t in threading.enumerate()} - before
    assert len(produced) <= 6  # stopped a few items after the consumer did, not at the end


def test_depth_must_be_positive():
    with pytest.raises(ValueError):
        list(made_ahead([1], depth=0))
