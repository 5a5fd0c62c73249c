"""The audit service: an append-only, hash-chained record of every message on the hub."""
