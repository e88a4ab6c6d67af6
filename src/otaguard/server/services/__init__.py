"""What the routers call: each service takes a session (or the database), values and
the time, and returns values or raises :class:`~otaguard.server.errors.ApiError` /
a library error. No request objects below this line; later issues (audit log,
campaigns) hook in here, not in the routers."""
