"""One service process: its run loop, logs, metrics and health endpoints."""
