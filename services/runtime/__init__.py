"""Plumbing shared by every service: subjects, topology, NATS, logging, metrics, health."""
