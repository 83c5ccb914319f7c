"""JSON API under /api/v1 (bearer token or session; session writes need X-CSRF-Token)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request, session
from werkzeug.exceptions import HTTPException

from mailhelper.accounts import (
    add_account,
    delete_account,
    describe_account,
    get_account,
    list_accounts,
    update_account,
)
from mailhelper.errors import JobRejectedError, NotFoundError, ValidationError
from mailhelper.mailbox import get_message, list_messages, raw_bytes, read_message
from mailhelper.models import JobRun, MailAccount
from mailhelper.users import authenticate, create_user, issue_token, revoke_token
from mailhelper.web.auth import (
    _start_session,
    check_csrf,
    csrf_token,
    db,
    registration_allowed,
    runtime,
)
from mailhelper.web.messages import page_args

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Any:
    return jsonify({"error": exc.name, "detail": exc.description}), exc.code


@bp.errorhandler(ValidationError)
def _validation_error(exc: ValidationError) -> Any:
    return jsonify({"error": "Bad Request", "detail": str(exc)}), 400


@bp.errorhandler(NotFoundError)
def _not_found(_exc: NotFoundError) -> Any:
    return jsonify({"error": "Not Found", "detail": "no such object"}), 404


def api_auth(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is None:
            abort(401, description="log in or send an API token (Authorization: Bearer ...)")
        if not g.via_token and request.method not in ("GET", "HEAD", "OPTIONS"):
            check_csrf(request.headers.get("X-CSRF-Token"))
        return view(*args, **kwargs)

    return wrapped


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="a JSON object body is required")
    return data


def owned(account_id: int) -> MailAccount:
    return get_account(db(), g.user, account_id)


@bp.post("/auth/register")
def register() -> Any:
    registration_allowed()
    data = body()
    user = create_user(
        db(), runtime().ciphers, str(data.get("email", "")), str(data.get("password", ""))
    )
    return jsonify({"id": user.id, "email": user.email}), 201


@bp.post("/auth/token")
def token() -> Any:
    data = body()
    user = authenticate(db(), str(data.get("email", "")), str(data.get("password", "")))
    if user is None:
        abort(401, description="wrong e-mail address or password")
    return jsonify({"token": issue_token(db(), user, str(data.get("name", "api")))}), 201


@bp.delete("/auth/token")
@api_auth
def revoke() -> Any:
    header = request.headers.get("Authorization", "")
    if not g.via_token or not revoke_token(db(), g.user, header[7:].strip()):
        abort(400, description="send the token to revoke as the bearer token")
    return "", 204


@bp.post("/auth/login")
def login() -> Any:
    data = body()
    user = authenticate(db(), str(data.get("email", "")), str(data.get("password", "")))
    if user is None:
        abort(401, description="wrong e-mail address or password")
    _start_session(user)
    return jsonify({"id": user.id, "email": user.email, "csrf_token": csrf_token()})


@bp.post("/auth/logout")
@api_auth
def logout() -> Any:
    session.clear()
    return "", 204


@bp.get("/me")
@api_auth
def me() -> Any:
    return jsonify({"id": g.user.id, "email": g.user.email})


@bp.get("/accounts")
@api_auth
def accounts() -> Any:
    rt = runtime()
    items = [describe_account(db(), rt.ciphers, g.user, a) for a in list_accounts(db(), g.user)]
    return jsonify({"accounts": items})


@bp.post("/accounts")
@api_auth
def create_account() -> Any:
    data = body()
    account = add_account(
        db(),
        runtime().ciphers,
        g.user,
        host=str(data.get("host", "")),
        port=data.get("port", ""),
        tls_mode=str(data.get("tls", "")),
        username=str(data.get("username", "")),
        password=str(data.get("password", "")),
    )
    return jsonify(describe_account(db(), runtime().ciphers, g.user, account)), 201


@bp.get("/accounts/<int:account_id>")
@api_auth
def account(account_id: int) -> Any:
    return jsonify(describe_account(db(), runtime().ciphers, g.user, owned(account_id)))


@bp.patch("/accounts/<int:account_id>")
@api_auth
def patch_account(account_id: int) -> Any:
    data = body()
    acc = owned(account_id)
    changes = {k: data.get(k) for k in ("host", "port", "username", "password")}
    changes["tls_mode"] = data.get("tls")
    update_account(db(), runtime().ciphers, g.user, acc, **changes)
    return jsonify(describe_account(db(), runtime().ciphers, g.user, acc))


@bp.delete("/accounts/<int:account_id>")
@api_auth
def remove_account(account_id: int) -> Any:
    delete_account(db(), owned(account_id))
    return "", 204


@bp.post("/accounts/<int:account_id>/sync")
@api_auth
def sync(account_id: int) -> Any:
    """Queue a sync (202 with the job; poll GET /api/v1/jobs/ID for its outcome)."""
    owned(account_id)
    try:
        job = runtime().jobs.submit_sync(g.user.id, account_id, force=True)
    except JobRejectedError as exc:
        return jsonify({"error": "Service Unavailable", "detail": str(exc)}), 503
    return jsonify({"job": job_view(job)}), 202


@bp.get("/accounts/<int:account_id>/messages")
@api_auth
def messages(account_id: int) -> Any:
    page, per_page = page_args()
    result = list_messages(
        db(),
        runtime().ciphers,
        g.user,
        owned(account_id),
        page=page,
        per_page=per_page,
        folder=request.args.get("folder"),
    )
    return jsonify(
        {
            "messages": result.items,
            "total": result.total,
            "page": result.page,
            "per_page": result.per_page,
        }
    )


@bp.get("/messages/<int:message_id>")
@api_auth
def message(message_id: int) -> Any:
    return jsonify(read_message(db(), runtime().ciphers, g.user, message_id))


@bp.get("/messages/<int:message_id>/raw")
@api_auth
def message_raw(message_id: int) -> Any:
    msg, _ = get_message(db(), g.user, message_id)
    return Response(raw_bytes(runtime().ciphers, g.user, msg), mimetype="message/rfc822")


def job_view(job: JobRun) -> dict[str, Any]:
    def ts(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.id,
        "kind": job.kind,
        "backend": job.backend,
        "status": job.status,
        "attempts": job.attempts,
        "account_id": job.account_id,
        "enqueued_at": ts(job.enqueued_at),
        "started_at": ts(job.started_at),
        "finished_at": ts(job.finished_at),
        "error": job.error,
    }


@bp.get("/jobs/<int:job_id>")
@api_auth
def job(job_id: int) -> Any:
    row = db().get(JobRun, job_id)
    if row is None or row.user_id != g.user.id:
        raise NotFoundError("no such job")
    return jsonify(job_view(row))
