"""Fixtures of the feature tests: a pika connection to the session broker and a channel in
confirm mode on it."""

from __future__ import annotations

import pika
import pytest


@pytest.fixture
def conn(broker):
    c = pika.BlockingConnection(pika.URLParameters(broker.url()))
    yield c
    c.close()


@pytest.fixture
def ch(conn):
    channel = conn.channel()
    channel.confirm_delivery()
    return channel
