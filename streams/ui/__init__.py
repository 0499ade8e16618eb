"""The human queue as a web page: a tenant's escalations and dead letters, one ticket's whole trail, and the
two things a person does with them (answer by hand, replay a dead letter).

``serve(settings, host, port, tokens)`` runs it until interrupted; :func:`streams.ui.app.make_app` builds the
aiohttp application (tests start it in-process).
"""
from __future__ import annotations

from streams.ui.app import make_app, serve

__all__ = ["make_app", "serve"]
