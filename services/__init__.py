"""Referral Hub: care-team messaging between independent clinics, on NATS JetStream."""
