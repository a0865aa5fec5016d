"""An in-process Flower Grid for fast tests of the adapter's message handling.

It delivers each message to a ClientApp called in this process with the node's own
persistent Context, as a SuperNode would, and turns an exception into an error reply,
as Flower's runtime does. ``intercept(node_id, reply) -> reply | None`` lets a test
tamper with or drop replies on their way back.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

Intercept = Callable[[int, Message], "Message | None"]


@contextmanager
def task_identity() -> Iterator[None]:
    """Messages need a run id, which Flower's runtime sets per process."""
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class LocalGrid(Grid):
    def __init__(self, app: ClientApp, num_nodes: int, intercept: Intercept | None = None) -> None:
        self.app = app
        self.intercept = intercept
        self.contexts = {
            1000 + p: Context(
                run_id=1,
                node_id=1000 + p,
                node_config={"partition-id": p, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for p in range(num_nodes)
        }
        self.sent: list[Message] = []
        self.exchanges = 0
        """Calls of send_and_receive with at least one message."""

    # The strategies under test only list nodes and call send_and_receive; the rest of
    # Flower's Grid interface fails loudly so that a new use of it cannot pass unnoticed.
    _UNUSED = "the test grid supports get_node_ids and send_and_receive only"

    def set_run(self, run_id: int) -> None:  # type: ignore[override]
        pass

    @property
    def run(self) -> Any:
        raise NotImplementedError(self._UNUSED)

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError(self._UNUSED)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError(self._UNUSED)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError(self._UNUSED)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        messages = list(messages)
        self.exchanges += bool(messages)
        for message in messages:
            self.sent.append(message)
            node = message.metadata.dst_node_id
            try:
                # A copy, as off the wire: a mod may edit what it receives.
                reply = self.app(copy.deepcopy(message), self.contexts[node])
            except Exception as exc:  # the runtime's behaviour: an error reply
                reply = Message(Error(0, repr(exc)), reply_to=message)
            if self.intercept is not None:
                reply = self.intercept(node, reply)
            if reply is not None:
                replies.append(reply)
        return replies
