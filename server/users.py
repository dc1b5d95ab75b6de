"""Named accounts with argon2 password hashes, their roles, and bearer tokens with an expiry."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dicom_node.index import Index
from server.errors import NotAuthenticated, UserError

ROLES = ("radiologist", "admin", "worker")
# One verification of a name that does not exist costs what a real one costs (no timing oracle).
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("no such user")


@dataclass(frozen=True)
class User:
    name: str
    role: str


@dataclass(frozen=True)
class IssuedToken:
    token: str
    user: User
    expires_at: float


def add_user(index: Index, name: str, role: str, password: str, *, now: float | None = None) -> User:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not name.strip() or len(name) > 64:
        raise UserError("a user name has 1 to 64 characters")
    if len(password) < 8:
        raise UserError("a password has at least 8 characters")
    with index.transaction() as conn:
        if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise UserError(f"user {name} exists already")
        conn.execute("INSERT INTO users(name, role, password_hash, created_at) VALUES (?,?,?,?)",
                     (name, role, _HASHER.hash(password), time.time() if now is None else now))
    return User(name, role)


def find_user(index: Index, name: str) -> User | None:
    row = index.reader().execute("SELECT name, role FROM users WHERE name = ? AND disabled = 0", (name,)).fetchone()
    return User(row["name"], row["role"]) if row else None


def list_users(index: Index) -> list[User]:
    rows = index.reader().execute("SELECT name, role FROM users WHERE disabled = 0 ORDER BY name").fetchall()
    return [User(r["name"], r["role"]) for r in rows]


def check_password(index: Index, name: str, password: str) -> User:
    """The user whose password this is; NotAuthenticated (the same for an unknown name) otherwise."""
    row = index.reader().execute(
        "SELECT name, role, password_hash FROM users WHERE name = ? AND disabled = 0", (name,)).fetchone()
    try:
        _HASHER.verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise NotAuthenticated("wrong user name or password") from None
    if row is None:
        raise NotAuthenticated("wrong user name or password")
    return User(row["name"], row["role"])


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(index: Index, user: User, ttl_s: float, *, now: float | None = None) -> IssuedToken:
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    with index.transaction() as conn:
        conn.execute("DELETE FROM tokens WHERE expires_at < ?", (now,))
        conn.execute("INSERT INTO tokens(token_hash, user_name, issued_at, expires_at) VALUES (?,?,?,?)",
                     (_token_hash(token), user.name, now, now + ttl_s))
    return IssuedToken(token, user, now + ttl_s)


def user_of_token(index: Index, token: str, *, now: float | None = None) -> User:
    now = time.time() if now is None else now
    row = index.reader().execute(
        "SELECT u.name, u.role, t.expires_at FROM tokens t JOIN users u ON u.name = t.user_name "
        "WHERE t.token_hash = ? AND u.disabled = 0", (_token_hash(token),)).fetchone()
    if row is None or row["expires_at"] < now:
        raise NotAuthenticated("bad or expired token")
    return User(row["name"], row["role"])
