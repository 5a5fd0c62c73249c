"""The clinic gateway: a FHIR R4 API over HTTPS, acting for each clinic with its own NATS credentials."""
