"""Contraindication screening: a rule table kept as data, and a pure matcher over it."""
