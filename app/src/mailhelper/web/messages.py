"""HTML pages: message list (paged) and one message, decrypted for its owner only."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, g, render_template, request

from mailhelper.errors import NotFoundError
from mailhelper.mailbox import get_message, list_messages, raw_bytes, read_message
from mailhelper.web.accounts import owned_account
from mailhelper.web.auth import db, login_required, runtime

bp = Blueprint("messages", __name__)


def page_args() -> tuple[int, int]:
    try:
        page = int(request.args.get("page", 1))
        per_page = int(request.args.get("per_page", 50))
    except ValueError:
        abort(400, description="page and per_page must be numbers")
    return page, per_page


@bp.route("/accounts/<int:account_id>/messages")
@login_required
def index(account_id: int) -> Any:
    account = owned_account(account_id)
    page, per_page = page_args()
    result = list_messages(db(), runtime().ciphers, g.user, account, page=page, per_page=per_page)
    return render_template("messages.html", account=account, page=result)


@bp.route("/messages/<int:message_id>")
@login_required
def show(message_id: int) -> Any:
    try:
        msg = read_message(db(), runtime().ciphers, g.user, message_id)
    except NotFoundError:
        abort(404)
    return render_template("message.html", msg=msg)


@bp.route("/messages/<int:message_id>/raw")
@login_required
def raw(message_id: int) -> Any:
    try:
        msg, _ = get_message(db(), g.user, message_id)
    except NotFoundError:
        abort(404)
    data = raw_bytes(runtime().ciphers, g.user, msg)
    return Response(
        data,
        mimetype="message/rfc822",
        headers={"Content-Disposition": f"attachment; filename=message-{message_id}.eml"},
    )
