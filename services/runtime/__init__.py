"""What every service shares: the NATS server (``broker``), what is kept in JetStream
(``jetstream``), a message's way through a service (``messaging``) and the process (``hosting``)."""
