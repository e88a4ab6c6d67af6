"""The vehicle's update agent: the TUF client, the director check and the device install, chained.

Sits above ``device`` and ``repo`` (it uses both) and below ``server``; it adds
no verification of its own, so there is exactly one trust engine (``repo.trust``),
one director check (``repo.uptane``) and one image verifier (``image``) in the
system, whichever side runs them.
"""
