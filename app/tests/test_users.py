"""Users: scrypt password hashes, login throttling, tokens."""

from __future__ import annotations

import datetime as dt

from mailhelper.models import User
from mailhelper.runtime import Runtime
from mailhelper.users import authenticate, create_user, lock_seconds


def test_password_hash_is_scrypt_and_never_the_password(any_runtime: Runtime) -> None:
    with any_runtime.sessions() as s:
        user = create_user(s, any_runtime.ciphers, " Mixed@Example.ORG ", "correct horse battery")
        assert user.email == "mixed@example.org"
        assert user.password_hash.startswith("scrypt:32768:8:1$")
        assert "correct horse" not in user.password_hash
        assert authenticate(s, "MIXED@example.org", "correct horse battery") is not None
        assert authenticate(s, "nobody@example.org", "correct horse battery") is None
        assert authenticate(s, "not an address", "x") is None


def test_repeated_failures_lock_the_login_for_a_while(any_runtime: Runtime) -> None:
    assert [lock_seconds(n) for n in (1, 4, 5, 6, 7, 30)] == [0, 0, 30, 60, 120, 900]
    with any_runtime.sessions() as s:
        create_user(s, any_runtime.ciphers, "t@example.org", "the right password")
        for _ in range(4):
            assert authenticate(s, "t@example.org", "wrong") is None
        assert authenticate(s, "t@example.org", "the right password") is not None  # resets
        for _ in range(5):
            assert authenticate(s, "t@example.org", "wrong") is None
        user = s.query(User).filter_by(email="t@example.org").one()
        assert user.failed_logins == 5
        assert user.locked_until is not None
        # locked: even the right password is refused for now
        assert authenticate(s, "t@example.org", "the right password") is None
        user.locked_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        s.commit()
        assert authenticate(s, "t@example.org", "the right password") is not None
        s.refresh(user)
        assert (user.failed_logins, user.locked_until) == (0, None)
