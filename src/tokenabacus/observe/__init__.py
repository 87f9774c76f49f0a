"""The observe seam: consumers of finished, durable records (metrics, Kafka), off the request path."""
