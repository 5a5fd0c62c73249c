"""The NATS server the hub runs on: starting it, configuring and securing it, and watching it."""
