"""Sessions, API tokens, CSRF and the register/login/logout pages."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.orm import Session

from mailhelper.errors import ValidationError
from mailhelper.models import User
from mailhelper.runtime import Runtime
from mailhelper.users import authenticate, create_user, user_for_token

bp = Blueprint("auth", __name__)


def runtime() -> Runtime:
    return current_app.extensions["mailhelper"]


def db() -> Session:
    if "db" not in g:
        g.db = runtime().sessions()
    return g.db


def close_session(_exc: BaseException | None) -> None:
    db_session = g.pop("db", None)
    if db_session is not None:
        db_session.close()


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf(value: str | None) -> None:
    expected = session.get("csrf")
    if not expected or not value or not hmac.compare_digest(expected, value):
        abort(400, description="missing or wrong CSRF token")


def load_user() -> None:
    g.user = None
    g.via_token = False
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        user = user_for_token(db(), header[7:].strip())
        if user is None:
            abort(401, description="invalid API token")
        g.user, g.via_token = user, True
        return
    user_id = session.get("user_id")
    if user_id is not None:
        g.user = db().get(User, user_id)
        if g.user is None:
            session.clear()


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is None:
            return redirect(url_for("auth.login", next=request.path))
        if request.method == "POST":
            check_csrf(request.form.get("csrf_token"))
        return view(*args, **kwargs)

    return wrapped


def _start_session(user: User) -> None:
    session.clear()
    session["user_id"] = user.id
    session.permanent = True
    csrf_token()


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("accounts.index")


@bp.app_context_processor
def _inject() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "current_user": g.get("user")}


@bp.route("/")
def home() -> Any:
    return redirect(url_for("accounts.index" if g.user else "auth.login"))


def registration_allowed() -> None:
    if not runtime().settings.registration_open:
        abort(403, description="registration is closed; ask the operator for an account")


@bp.route("/register", methods=["GET", "POST"])
def register() -> Any:
    registration_allowed()
    if request.method == "POST":
        check_csrf(request.form.get("csrf_token"))
        try:
            user = create_user(
                db(),
                runtime().ciphers,
                request.form.get("email", ""),
                request.form.get("password", ""),
            )
        except ValidationError as exc:
            flash(str(exc))
            return render_template("register.html"), 400
        _start_session(user)
        return redirect(url_for("accounts.index"))
    return render_template("register.html")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        check_csrf(request.form.get("csrf_token"))
        user = authenticate(db(), request.form.get("email", ""), request.form.get("password", ""))
        if user is None:
            flash("wrong e-mail address or password")
            return render_template("login.html"), 401
        _start_session(user)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html")


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    check_csrf(request.form.get("csrf_token"))
    session.clear()
    return redirect(url_for("auth.login"))
