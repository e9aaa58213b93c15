"""The StepQueue contract, run against InMemoryStepQueue and SqsStepQueue on moto."""

from __future__ import annotations

import pytest


def test_sent_steps_are_delivered(queue):
    queue.queue.send_step("run1", 0)
    queue.queue.send_step("run2", 7)
    assert sorted(queue.take()) == [("run1", 0, 0), ("run2", 7, 0)]


@pytest.mark.parametrize("delay_s", [0.5, 2, 2.5, 60])
def test_a_delayed_step_is_delivered_no_sooner_than_asked(queue, delay_s):
    queue.queue.send_step("run1", 3, delay_s)
    [(run_id, step, delayed)] = queue.take()
    assert (run_id, step) == ("run1", 3)
    assert delay_s <= delayed < delay_s + 1  # SQS rounds up to whole seconds


def test_each_send_is_a_separate_delivery(queue):
    # At least once: the queue never merges sends; the step handler drops duplicates.
    queue.queue.send_step("run1", 1)
    queue.queue.send_step("run1", 1)
    assert [(r, s) for r, s, _ in queue.take()] == [("run1", 1), ("run1", 1)]


def test_a_fanouts_item_messages_sent_together_are_each_delivered(queue):
    # 23 items: more than one request's worth on SQS (ten to a SendMessageBatch)
    items = [(index, 1 + index % 3) for index in range(23)]
    queue.queue.send_items("run1", 4, items)
    delivered = queue.take_messages()
    assert sorted((m.run_id, m.step, m.item, m.attempt) for m in delivered) == [
        ("run1", 4, index, attempt) for index, attempt in items
    ]
    assert {m.delay_s for m in delivered} == {0}
