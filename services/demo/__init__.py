"""Demo clinics and demo traffic for ``hubctl up``."""
