"""Asynchronous invocations: the durable queue and its dispatcher."""
