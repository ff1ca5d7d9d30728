"""warren-perf: a load generator for any AMQP 0-9-1 broker (RabbitMQ PerfTest's role).

The package holds a small asyncio AMQP client whose hot frames are encoded and parsed by
hand (`wire`, `client`), the worker processes that publish and consume (`workers`), the
orchestration of those processes and their clocks (`runner`), the scenarios themselves
(`scenarios`, `idle`) and the report formatting (`report`). The command line lives in
`warrenmq.cli.perf`.
"""
