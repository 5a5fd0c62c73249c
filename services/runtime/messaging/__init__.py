"""A message's way through a service: admitted, handled, acknowledged, and its outputs stored."""
