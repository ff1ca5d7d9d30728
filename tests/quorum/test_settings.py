"""A replicated queue's settings from its arguments and policy, and the declare arguments a
quorum queue refuses, as RabbitMQ 3.10 has them (checked against a real RabbitMQ in
tests/differential/test_quorum_queues.py and tests/features/test_quorum_queues.py)."""

from __future__ import annotations

import pytest

from warrenmq.amqp.errors import AMQPError
from warrenmq.queues.quorum.settings import check_declare_arguments, config_from

QQ = {"x-queue-type": "quorum"}
RESOURCE = "queue 'q' in vhost '/'"


def test_limits_and_ttls_take_the_smaller_of_argument_and_policy() -> None:
    config = config_from({**QQ, "x-max-length": 5, "x-message-ttl": 100, "x-expires": 9_000,
                          "x-delivery-limit": 3},
                         {"max-length": 2, "message-ttl": 500, "expires": 1_000,
                          "max-length-bytes": 64})
    assert (config.max_length, config.message_ttl_ms, config.expires_ms,
            config.delivery_limit, config.max_length_bytes) == (2, 100, 1_000, 3, 64)


def test_overflow_takes_the_policy_first_on_quorum_queues_the_argument_on_classic_ones() -> None:
    args, policy = {"x-overflow": "reject-publish"}, {"overflow": "drop-head"}
    assert config_from({**QQ, **args}, policy).overflow == "drop-head"
    assert config_from(args, policy).overflow == "reject-publish"


def test_the_dead_letter_exchange_and_key_take_the_argument_first() -> None:
    config = config_from({**QQ, "x-dead-letter-exchange": "a"},
                         {"dead-letter-exchange": "b", "dead-letter-routing-key": "k"})
    assert (config.dead_letter_exchange, config.dead_letter_routing_key) == ("a", "k")
    assert config_from({**QQ, "x-dead-letter-exchange": b""}, {}).dead_letter_exchange == ""


@pytest.mark.parametrize(("args", "policy", "strategy"), [
    ({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
      "x-dead-letter-exchange": "dlx"}, {}, "at-least-once"),
    ({"x-dead-letter-exchange": "dlx"},
     {"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}, "at-least-once"),
    # the policy's strategy wins over the argument's
    ({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
      "x-dead-letter-exchange": "dlx"}, {"dead-letter-strategy": "at-most-once"},
     "at-most-once"),
    # at-least-once needs reject-publish and a dead-letter exchange, else at most once
    ({"x-dead-letter-strategy": "at-least-once", "x-dead-letter-exchange": "dlx"}, {},
     "at-most-once"),
    ({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}, {},
     "at-most-once"),
])
def test_at_least_once_dead_lettering_is_in_force_only_as_rabbitmq_allows(args, policy,
                                                                          strategy) -> None:
    assert config_from({**QQ, **args}, policy).dead_letter_strategy == strategy


def test_classic_queues_are_at_most_once_and_keep_their_priorities() -> None:
    args = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
            "x-dead-letter-exchange": "dlx", "x-max-priority": 4}
    config = config_from(args, {})
    assert config.dead_letter_strategy == "at-most-once" and config.max_priority == 4
    assert config_from({"x-overflow": "reject-publish-dlx"}, {}).overflow == "reject-publish-dlx"
    assert config_from({**args, **QQ}, {}, "quorum").max_priority is None


def test_what_a_quorum_queue_cannot_use_is_ignored_never_refused() -> None:
    config = config_from({**QQ, "x-max-priority": 3,
                          "x-delivery-limit": "x", "x-single-active-consumer": "yes"}, {})
    assert (config.overflow, config.max_priority, config.delivery_limit,
            config.single_active_consumer) == ("drop-head", None, None, False)
    # deliberately unlike 3.10 (which falls back to drop-head): reject-publish-dlx is honoured
    assert config_from({**QQ, "x-overflow": "reject-publish-dlx"}, {}, "quorum").overflow == \
        "reject-publish-dlx"
    # a negative delivery limit acts as 0, as in RabbitMQ
    assert config_from({**QQ, "x-delivery-limit": -1}, {}).delivery_limit == 0


@pytest.mark.parametrize("arg", ["x-max-priority", "x-queue-mode", "x-queue-version",
                                 "x-queue-master-locator", "x-max-age"])
def test_classic_and_stream_arguments_are_refused_on_quorum_queues(arg) -> None:
    with pytest.raises(AMQPError) as e:
        check_declare_arguments({**QQ, arg: 1}, RESOURCE)
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - invalid arg '{arg}' for {RESOURCE} "
                                  "of queue type rabbit_quorum_queue")


def test_quorum_arguments_and_unknown_ones_are_accepted() -> None:
    check_declare_arguments({**QQ, "x-delivery-limit": 1, "x-dead-letter-strategy":
                             "at-least-once", "x-expires": 1, "x-consumer-timeout": 5,
                             "x-anything": True, "x-queue-leader-locator": "balanced"},
                            RESOURCE)


@pytest.mark.parametrize(("value", "why"), [("sometimes", "invalid_dlx_strategy"),
                                            (1, "{unacceptable_type,long}")])
def test_a_bad_dead_letter_strategy_is_refused(value, why) -> None:
    with pytest.raises(AMQPError) as e:
        check_declare_arguments({**QQ, "x-dead-letter-strategy": value}, RESOURCE)
    assert e.value.reply_text == (f"PRECONDITION_FAILED - invalid arg "
                                  f"'x-dead-letter-strategy' for {RESOURCE}: {why}")
