"""The PKI layer: offline root, regional intermediates, short-lived signers, revocation.

Pure X.509 building and validation over explicit inputs (issuer, keys, times,
roots, CRLs); CA directories on disk are handled by ``store.py``.
"""
