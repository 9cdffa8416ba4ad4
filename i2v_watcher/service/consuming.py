"""A Celery worker's hooks into Celery's own consumer (celery_worker.py): a step that ticks the worker on
the consumer's timer, and the tap that opens and closes the worker's queues as a pause comes and goes.

A paused worker stops consuming (Celery's own cancel_task_queue, as `celery control cancel_consumer`
does, but from inside the worker): the broker then hands it no task, and every task stays in Redis
for the other workers, or for this one once resumed. Nothing is taken and dropped. A task that
arrives all the same (fetched as the pause came: kombu hands back to Redis a message that reaches a
cancelled queue, but one already delivered is the worker's) is rejected back to the queue by the
worker before it claims anything (celery_worker.QueueWorker.process).

Imported only in celery mode, so that the core install needs no celery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from celery import bootsteps

TICK_S = 1.0  # the worker's idle tick: activity, signals, outcomes, lease history, pauses
log = structlog.get_logger("i2v_watcher.service.consuming")


class Tap:
    """Whether Celery's consumer takes tasks from the worker's queues: all of them, or none."""

    def __init__(self, queues: list[str]) -> None:
        self.queues = queues
        self.consumer: Any = None  # Celery's consumer, while its steps run (Tick sets it)

    def open(self, on: bool) -> None:
        """Consume the worker's queues (on) or none of them. Called on the Celery loop's thread, between
        tasks or from inside one (solo pool): kombu holds a cancel back until a read in progress is
        done. Before the consumer's first consume (a worker started paused) the queues are only taken
        off its list, so it never begins; after a reconnection it starts from the queues selected
        when the connection was lost."""
        consumer = self.consumer
        tasks = None if consumer is None else consumer.task_consumer
        if tasks is None:
            return
        listed = {queue.name for queue in tasks.queues}
        change = [q for q in self.queues if (q in listed) != on]
        for queue in change:
            (consumer.add_task_queue if on else consumer.cancel_task_queue)(queue)
        if change:
            log.info("consuming again" if on else "consuming nothing: the tasks stay in the broker",
                     queues=change)


def tick_step(tap: Tap, tick: Callable[[], None]) -> type[bootsteps.StartStopStep]:
    """A consumer step that calls `tick` every TICK_S on the Celery loop's own timer, and once as it
    starts: after Celery's task consumer is made and before its event loop consumes anything (so a
    worker started paused takes nothing). Started again after every reconnection to the broker (the
    consumer restarts its steps then)."""

    class Tick(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, parent: Any) -> None:
            tap.consumer = parent
            tick()
            self.tref = parent.timer.call_repeatedly(TICK_S, tick)

        def stop(self, parent: Any) -> None:
            tap.consumer = None
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        def shutdown(self, parent: Any) -> None:
            self.stop(parent)

    return Tick
