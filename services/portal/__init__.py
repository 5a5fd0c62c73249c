"""The clinic portal: a server-rendered web inbox, one more client of the hub."""
