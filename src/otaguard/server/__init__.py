"""The fleet server: scheduling updates for devices, never vouching for their content.

See docs/server.md (the contract) and docs/architecture.md (where it sits). Layout:
``app.py`` builds the FastAPI application from a :class:`~otaguard.server.config.ServerConfig`;
``routers/`` hold one router per resource (thin: parse, call a service, answer);
``services/`` hold what the routers call (enrolment, releases, deployments, check-ins);
``models.py`` and ``migrations/`` the database; ``lease.py`` and ``jobs.py`` the background
work that one process at a time may do.
"""
