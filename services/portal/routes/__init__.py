"""The portal's route handlers, one module per group of pages; ``app`` assembles them under ``/portal``."""
