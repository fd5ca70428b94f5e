"""Console users: reviewer or admin, passwords hashed with scrypt (hashlib), never stored or logged in clear."""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from sqlmodel import Field, Session, SQLModel, select

from hallmark.db import create_tables

ROLES = ("reviewer", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt cost does not grow with length, but nobody needs more
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class UserRow(SQLModel, table=True):
    __tablename__ = "review_users"
    name: str = Field(primary_key=True)
    role: str
    password_hash: str
    prompt_access: bool = False  # may read decrypted prompts of tasks they hold
    active: bool = True
    created_at: float


@dataclass(frozen=True)
class User:
    name: str
    role: str
    prompt_access: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def senior(self) -> bool:
        """Admins are the senior reviewers: they work the escalation queue."""
        return self.is_admin


def hash_password(password: str, salt: bytes | None = None, n: int = SCRYPT_N) -> str:
    """`scrypt$N$r$p$salt$hash` (base64), from hashlib.scrypt."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32,
                            maxmem=64 * 1024 * 1024)
    return "$".join(["scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=32, maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the user is unknown, so a wrong name costs what a wrong password does."""
    return hash_password("not anyone's password", salt=b"\0" * 16)


class UserStore:
    def __init__(self, engine):
        self.engine = engine
        create_tables(engine, [UserRow.__table__])

    def add(self, name: str, role: str, password: str, prompt_access: bool = False, replace: bool = False) -> User:
        """Create (or with `replace`, reset) a user; ValueError names what is wrong with the input."""
        if not NAME_RE.match(name):
            raise ValueError("user names are 1–64 letters, digits, '_', '.', '-' (starting with a letter or digit)")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise ValueError(f"passwords are {MIN_PASSWORD}–{MAX_PASSWORD} characters")
        with Session(self.engine) as session:
            row = session.get(UserRow, name)
            if row is not None and not replace:
                raise ValueError(f"user {name!r} exists (use --replace to reset it)")
            row = row or UserRow(name=name, role=role, password_hash="", created_at=time.time())
            row.role, row.password_hash, row.prompt_access, row.active = role, hash_password(password), \
                prompt_access, True
            session.add(row)
            session.commit()
        return User(name, role, prompt_access)

    def get(self, name: str) -> User | None:
        with Session(self.engine) as session:
            row = session.get(UserRow, name)
        return User(row.name, row.role, row.prompt_access) if row is not None and row.active else None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password matches; an unknown name costs the same scrypt work (no timing oracle)."""
        with Session(self.engine) as session:
            row = session.get(UserRow, name) if len(name) <= 64 else None
        if row is None or not row.active:
            verify_password(password, _dummy_hash())
            return None
        return User(row.name, row.role, row.prompt_access) if verify_password(password, row.password_hash) else None

    def names(self) -> list[User]:
        with Session(self.engine) as session:
            rows = session.exec(select(UserRow).where(UserRow.active).order_by(UserRow.name)).all()
        return [User(r.name, r.role, r.prompt_access) for r in rows]
