"""The gateway's route handlers, one module per group of FHIR resources; ``app`` assembles them."""
