"""Documents attached to referrals, one store for the FHIR gateway and the clinic portal.

The bytes live in JetStream's object store (:data:`~referral_hub.runtime.jetstream.topology.GATEWAY_DOCUMENTS`),
with the document's :class:`DocumentMeta` as the object's description, so a document read
by id needs nothing else. A referral's documents are listed from an index bucket
(:data:`~referral_hub.runtime.jetstream.topology.DOCUMENTS_INDEX_KV`) holding one key per referral
whose value is that referral's metadata list, written compare-and-set: a listing is one
KV read, however many documents the store holds. The same bucket counts each clinic's stored
bytes (``usage.<clinic>``), reserved compare-and-set before an upload's bytes are written,
against :data:`~referral_hub.documents.domain.CLINIC_QUOTA_BYTES`.

Who may see a document is decided by the callers (a party to the referral, from the
clinic's own inbox); only the ``gateway`` and ``portal`` hub users can reach the store, so
no clinic reads it around them. Each upload and read is put in the hub's audit log, with
the document's SHA-256, by an :func:`access_record` the caller sends on the clinic's own
out subject.

The package has a pure half (:mod:`.domain`: the metadata, its checks, the audit record)
and an I/O half (:mod:`.store`); importing the package imports neither.
"""
