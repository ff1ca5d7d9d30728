"""The six RabbitMQ tutorials (hello world, work queues, publish/subscribe, routing,
topics, RPC) as black-box tests, once per client library: pika, aio-pika, kombu."""
