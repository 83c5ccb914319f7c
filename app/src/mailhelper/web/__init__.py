"""Flask app factory."""

from __future__ import annotations

import time
from datetime import timedelta

from flask import Flask, Response, g, request

from mailhelper import metrics
from mailhelper.runtime import Runtime, build_runtime
from mailhelper.users import prepare_password_checks
from mailhelper.vault import WEB_SECRETS
from mailhelper.web import accounts, api, auth, health, messages


def create_app(runtime: Runtime | None = None) -> Flask:
    """The WSGI app. Without a runtime the configuration is read from the environment."""
    runtime = runtime or build_runtime(secrets=WEB_SECRETS)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=runtime.settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=runtime.settings.production,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.extensions["mailhelper"] = runtime
    prepare_password_checks()
    for bp in (auth.bp, accounts.bp, messages.bp, api.bp, health.bp):
        app.register_blueprint(bp)
    app.before_request(auth.load_user)
    app.teardown_appcontext(auth.close_session)

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.monotonic()

    @app.after_request
    def _count(response: Response) -> Response:
        metrics.HTTP_REQUESTS.labels(
            method=request.method,
            endpoint=request.endpoint or "unknown",
            status=str(response.status_code),
        ).inc()
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'"
        )
        return response

    return app
