"""Patient details sealed to the clinics of a referral: the pure sealing core and the clinics' key store."""
