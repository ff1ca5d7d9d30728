"""WarrenMQ: an AMQP 0-9-1 broker that is a drop-in replacement for RabbitMQ."""
__version__ = "0.1.0"
