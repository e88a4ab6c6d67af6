"""One router per resource; each declares the permission (or device signature) it needs."""
