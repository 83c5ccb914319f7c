"""HTML pages: mail accounts (list, add, delete, sync now)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from mailhelper.accounts import (
    TLS_MODES,
    add_account,
    delete_account,
    describe_account,
    get_account,
    list_accounts,
)
from mailhelper.errors import JobRejectedError, NotFoundError, ValidationError
from mailhelper.web.auth import db, login_required, runtime

bp = Blueprint("accounts", __name__, url_prefix="/accounts")


def owned_account(account_id: int) -> Any:
    try:
        return get_account(db(), g.user, account_id)
    except NotFoundError:
        abort(404)


@bp.route("/")
@login_required
def index() -> Any:
    rt = runtime()
    items = [describe_account(db(), rt.ciphers, g.user, a) for a in list_accounts(db(), g.user)]
    return render_template("accounts.html", accounts=items, tls_modes=TLS_MODES)


@bp.route("/", methods=["POST"])
@login_required
def create() -> Any:
    form = request.form
    try:
        add_account(
            db(),
            runtime().ciphers,
            g.user,
            host=form.get("host", "").strip(),
            port=form.get("port", ""),
            tls_mode=form.get("tls", "implicit"),
            username=form.get("username", "").strip(),
            password=form.get("password", ""),
        )
    except ValidationError as exc:
        flash(str(exc))
        return redirect(url_for("accounts.index")), 303
    return redirect(url_for("accounts.index")), 303


@bp.route("/<int:account_id>/delete", methods=["POST"])
@login_required
def remove(account_id: int) -> Any:
    delete_account(db(), owned_account(account_id))
    flash("account deleted")
    return redirect(url_for("accounts.index")), 303


@bp.route("/<int:account_id>/sync", methods=["POST"])
@login_required
def sync_now(account_id: int) -> Any:
    owned_account(account_id)
    try:
        job = runtime().jobs.submit_sync(g.user.id, account_id, force=True)
    except JobRejectedError as exc:
        flash(f"sync not queued: {exc}")
    else:
        flash(f"sync queued (job {job.id})")
    return redirect(url_for("accounts.index")), 303
