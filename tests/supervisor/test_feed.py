"""The Watch feed's queue per subscriber: order, compaction, the lost count (pure logic)."""

from __future__ import annotations

from lattice_workers.protocol import RunInfo
from lattice_workers.supervisor._feed import (
    ENDED,
    MAX_PENDING,
    STARTED,
    STATE,
    RunFeed,
    Subscription,
)


def run(run_id: str, state: str, task: str = "task_1") -> RunInfo:
    return RunInfo(run_id=run_id, task_id=task, worker="W", state=state, actor="agent:w")


def test_a_subscriber_that_keeps_up_gets_every_event_in_order() -> None:
    sub = Subscription(None)
    for state in ("queued", "preparing", "running"):
        sub.offer(STATE, run("a", state))
    sub.offer(ENDED, run("a", "completed"))
    got = sub.take()
    assert [(p.kind, p.run.state, p.lost) for p in got] == [
        (STATE, "queued", 0), (STATE, "preparing", 0), (STATE, "running", 0),
        (ENDED, "completed", 0),
    ]
    assert sub.take() == [] and not sub.wake.is_set()


def test_the_record_sent_is_the_one_at_the_change_not_a_later_one() -> None:
    sub = Subscription(None)
    info = run("a", "running")
    sub.offer(STATE, info)
    info.state = "completed"
    assert sub.take()[0].run.state == "running"


def test_past_the_bound_only_each_runs_latest_event_is_kept_and_the_loss_counted() -> None:
    sub = Subscription(None)
    sub.offer(STARTED, run("a", "queued"))
    offered = 1
    for i in range(3 * MAX_PENDING):
        sub.offer(STATE, run("b", f"s{i}"))
        offered += 1
        assert len(sub.pending) <= MAX_PENDING
    sub.offer(STATE, run("a", "running"))
    sub.offer(ENDED, run("b", "failed"))
    offered += 2
    got = sub.take()
    assert len(got) <= MAX_PENDING
    assert sub.lost_total == sum(p.lost for p in got) == offered - len(got)
    # Each run's last event is its newest; "b" ends with its end, never dropped.
    assert [p.run.state for p in got if p.run.run_id == "b"][-1] == "failed"
    assert [p.kind for p in got if p.run.run_id == "b"][-1] == ENDED
    # "a" was compacted while its first event was unsent: it is still "started".
    assert next(p.kind for p in got if p.run.run_id == "a") == STARTED


def test_events_that_could_not_be_sent_go_back_in_front() -> None:
    sub = Subscription(None)
    sub.offer(STATE, run("a", "running"))
    sub.offer(STATE, run("b", "running"))
    unsent = sub.take()
    sub.offer(ENDED, run("c", "completed"))
    sub.put_back(unsent)
    assert [p.run.run_id for p in sub.take()] == ["a", "b", "c"]


def test_a_task_filter_keeps_only_that_tasks_runs() -> None:
    feed = RunFeed()
    sub = feed.subscribe("task_2", [run("a", "running", "task_1"), run("b", "running", "task_2")])
    feed.publish(run("c", "completed", "task_1"))
    feed.publish(run("d", "completed", "task_2"))
    assert [(p.run.run_id, p.kind) for p in sub.take()] == [("b", "current"), ("d", ENDED)]
    feed.unsubscribe(sub)
    assert feed.subscriptions == set()
