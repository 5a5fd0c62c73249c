"""What the hub keeps in JetStream (streams, subjects, buckets, consumers) and how it reads and writes them."""
