"""The one exception type of the protocol layers: an AMQP reply code with its text.

Whether it closes the channel or the whole connection follows from the code (HARD_ERRORS),
as in the spec and in RabbitMQ; `class_id`/`method_id` name the method that caused it.
"""

from __future__ import annotations

from .constants import HARD_ERRORS, REPLY_NAMES


class AMQPError(Exception):
    def __init__(self, reply_code: int, text: str, class_id: int = 0, method_id: int = 0,
                 hard: bool | None = None) -> None:
        self.reply_code = reply_code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id
        self.hard = reply_code in HARD_ERRORS if hard is None else hard
        super().__init__(self.reply_text)

    @property
    def reply_text(self) -> str:
        text = f"{REPLY_NAMES.get(self.reply_code, 'ERROR')} - {self.text}"
        if len(text.encode()) > 255:  # a short string; RabbitMQ cuts it the same way
            text = text.encode()[:252].decode(errors="ignore") + "..."
        return text

    def on(self, class_id: int, method_id: int) -> AMQPError:
        if not self.class_id:
            self.class_id, self.method_id = class_id, method_id
        return self


def amqp_error(reply_code: int, fmt: str, *args: object) -> AMQPError:
    return AMQPError(reply_code, fmt % args if args else fmt)
