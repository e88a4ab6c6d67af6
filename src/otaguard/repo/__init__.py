"""TUF repository security: the image repository, the client (engine, fetcher), the director.

* :mod:`otaguard.repo.trust` -- :class:`TrustEngine`, pure (bytes in, verified
  metadata out, explicit time); shared by ``otaguard tuf-client`` and the device agent.
  :mod:`otaguard.repo.tuf_adapter` is the one door to python-tuf's private API it uses.
* :mod:`otaguard.repo.fetcher` -- :class:`HttpxFetcher`, length-capped, deadline-bound HTTP.
* :mod:`otaguard.repo.client` -- :class:`TufClient`, the TUF client workflow and
  the on-disk metadata cache.
* :mod:`otaguard.repo.bootstrap` -- creating a repository and running its online roles
  (what ``repo init``/``repo publish`` and the fleet server call);
  :mod:`otaguard.repo.repository`, :mod:`otaguard.repo.layout`, :mod:`otaguard.repo.config`
  -- the repository itself, its files and its validated ``config.json``.
* :mod:`otaguard.repo.director`, :mod:`otaguard.repo.uptane` -- the director's metadata
  and the vehicle's checks of it.
"""
