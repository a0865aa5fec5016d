"""An in-process Flower Grid, for benchmarks and tests: no network, no Ray, no SuperLink.

:class:`LocalGrid` hands each message of a ServerApp (a Strategy, or Flower's own
workflows) to the ClientApp of its destination node, called in this process with that
node's own :class:`~flwr.app.Context`, which persists between messages as a
SuperNode's does. Each message is deep-copied first, standing in for the serialization
of a real Grid (a Mod may edit what it receives), and given a message id, as Flower's
``InMemoryGrid.push_messages`` does. An exception of the ClientApp becomes an error
reply, as in Flower's runtime (or, with ``raise_errors``, propagates).

It implements the synchronous part of Flower's ``Grid``: ``get_node_ids`` and
``send_and_receive``. The asynchronous ``push_messages`` / ``pull_messages`` and
``create_message`` fail loudly, so that a new use of them cannot pass unnoticed.
``send_and_receive`` ignores its timeout: a node answers, or its ClientApp's error
does. Subclasses change what one delivery does by overriding :meth:`LocalGrid.deliver`
(drop a request, record a reply, answer from a recording).

Used by ``tests/flower`` and by :mod:`securefl.bench.flower` (Flower's SecAgg+ round
in process). It is not a simulation of Flower's transport: for that, use
``flwr.simulation.run_simulation``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["FIRST_NODE_ID", "Intercept", "LocalGrid", "task_identity"]

Intercept = Callable[[int, Message], "Message | None"]
"""``intercept(node_id, reply) -> reply``: may change a reply, or drop it (``None``)."""

FIRST_NODE_ID = 1000
"""The node id of partition 0 in :meth:`LocalGrid.for_app` (partition p: 1000 + p)."""


@contextmanager
def task_identity(run_id: int = 1) -> Iterator[None]:
    """Set the task identity that Flower's runtime sets per process (``Message(...)``
    reads its run id), and restore the previous one on exit."""
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class LocalGrid(Grid):
    """Delivers each message to its destination's ClientApp, in this process.

    Parameters
    ----------
    nodes:
        Node id -> (the node's ClientApp, its Context).
    intercept:
        Called with every reply on its way back (:data:`Intercept`).
    raise_errors:
        Let an exception of a ClientApp propagate instead of answering with an error
        reply (code 0, the exception's repr).

    Attributes
    ----------
    exchanges:
        Calls of ``send_and_receive`` with at least one message.
    """

    def __init__(
        self,
        nodes: Mapping[int, tuple[ClientApp, Context]],
        *,
        intercept: Intercept | None = None,
        raise_errors: bool = False,
    ) -> None:
        self.nodes = dict(nodes)
        self.intercept = intercept
        self.raise_errors = raise_errors
        self.exchanges = 0
        self._ids = itertools.count(1)
        self._run: Any = None

    @classmethod
    def for_app(
        cls, app: ClientApp, num_nodes: int, intercept: Intercept | None = None
    ) -> LocalGrid:
        """``num_nodes`` nodes running ``app``: node ``FIRST_NODE_ID + p`` holds
        partition p, with ``node_config`` ``{"partition-id": p, "num-partitions":
        num_nodes}`` as Flower's simulation gives it, and an empty state."""
        return cls(
            {
                FIRST_NODE_ID + p: (
                    app,
                    Context(
                        run_id=1,
                        node_id=FIRST_NODE_ID + p,
                        node_config={"partition-id": p, "num-partitions": num_nodes},
                        state=RecordDict(),
                        run_config={},
                    ),
                )
                for p in range(num_nodes)
            },
            intercept=intercept,
        )

    @property
    def contexts(self) -> dict[int, Context]:
        """Node id -> the node's Context (its state between messages)."""
        return {node: context for node, (_, context) in self.nodes.items()}

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        if self._run is None:
            raise NotImplementedError("no run set on this LocalGrid (set_run)")
        return self._run

    def create_message(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(self._UNSUPPORTED)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    _UNSUPPORTED = "LocalGrid supports get_node_ids and send_and_receive only"

    def push_messages(self, messages: Iterable[Message]) -> NoReturn:
        raise NotImplementedError(self._UNSUPPORTED)

    def pull_messages(self, message_ids: Iterable[str]) -> NoReturn:
        raise NotImplementedError(self._UNSUPPORTED)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self.exchanges += bool(messages)
        replies = []
        for message in messages:
            reply = self.deliver(message)
            if reply is not None and self.intercept is not None:
                reply = self.intercept(message.metadata.dst_node_id, reply)
            if reply is not None:
                replies.append(reply)
        return replies

    def deliver(self, message: Message) -> Message | None:
        """Run the destination's ClientApp on a copy of ``message``; its reply
        (``None``: no reply, which a subclass may decide)."""
        app, context = self.nodes[message.metadata.dst_node_id]
        copied = copy.deepcopy(message)  # as off the wire: a mod may edit what it receives
        copied.metadata.__dict__["_message_id"] = str(next(self._ids))
        if self.raise_errors:
            return app(copied, context)
        try:
            return app(copied, context)
        except Exception as exc:  # the runtime's behaviour: an error reply
            return Message(Error(0, repr(exc)), reply_to=copied)
