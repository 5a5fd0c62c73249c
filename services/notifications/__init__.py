"""The notifications service: turns domain events into notifications and pages."""
