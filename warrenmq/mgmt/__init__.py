"""The management plugins: the RabbitMQ-compatible HTTP API, the web console and Prometheus
metrics, served from the node's own event loop while the app runs and the plugin is enabled
(see plugins.py for the enabled-plugins file and host.py for starting and stopping them)."""
