"""The wire protocol between the device agent and the fleet server (pure; both sides import it).

It sits below ``agent`` and ``server`` so that neither imports the other: the
device side never imports the server.
"""
