"""Privacy-preserving record linkage: clinics make keyed linkage keys, the hub compares keys.

The clinic side (:mod:`.linkage_keys`) turns a person's details into keyed-hash tokens and a
Bloom-filter encoding under a secret that every clinic of the network shares and the hub does
not hold; the hub side (:mod:`.matching`) indexes those keys and grades candidates with FHIR's
match grades. Neither module does I/O, so both are tested and benchmarked without a server.
"""
