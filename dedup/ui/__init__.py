"""The analyst workbench: a small web app (``dedup ui``) over the gRPC service.

It holds no data and no credentials of its own: an analyst signs in with their token, every page
is a call to the service with that token (dedup.client.DedupClient), so the service's roles
decide what each person may see and do. Pages: overview, seeds, one seed (picture, labels,
history, remove / relabel / restore with a reason), search, and the audit trail.
"""
