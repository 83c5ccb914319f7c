"""WSGI entry point for gunicorn: `gunicorn mailhelper.wsgi:app`.

Configuration comes from the environment (and, in production, from Vault after the
AppRole login), exactly as for the CLI.
"""

from __future__ import annotations

from mailhelper.web import create_app

app = create_app()
