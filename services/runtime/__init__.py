"""What every service shares, in four packages.

``broker``: the NATS server. ``jetstream``: what is kept in JetStream. ``messaging``: a message's way
through a service. ``hosting``: the service process.
"""
