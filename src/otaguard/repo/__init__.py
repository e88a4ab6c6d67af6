"""TUF repository security: the client trust engine, its fetcher and its workflow.

* :mod:`otaguard.repo.trust` -- :class:`TrustEngine`, pure (bytes in, verified
  metadata out, explicit time); shared by ``otaguard tuf-client`` and the device agent.
* :mod:`otaguard.repo.fetcher` -- :class:`HttpxFetcher`, length-capped, deadline-bound HTTP.
* :mod:`otaguard.repo.client` -- :class:`TufClient`, the TUF client workflow and
  the on-disk metadata cache.
"""
