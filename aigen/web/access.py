"""Per-user access codes: what a user types, besides their user_id, when the
gallery is served on an address other than loopback.

Only a salted scrypt hash is stored, so a code can be shown once, when it is
made, and never again: `aigen user code ID` makes one; `--rotate` replaces it
(the old one stops working at once); `--revoke` removes it. Kept free of the
web stack so the CLI can use it without importing Bottle.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from aigen.config import validate_user_id
from aigen.errors import BadInput, NotFound
from aigen.store.core import Store, iso, utcnow

# Crockford's base32 alphabet: no I, L, O or U, so a code read aloud or copied
# by hand is not mistyped. 12 symbols = 60 bits, far beyond what a login rate
# limit of 10 a minute lets anyone guess.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS = 3
GROUP_LEN = 4
# scrypt cost: about 16 MB and a few tens of milliseconds per check, which
# makes an offline guess expensive without slowing a login noticeably.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCHEME = "scrypt"
# Checked against when the user has no code or does not exist, so that a
# wrong code costs one scrypt whoever it is for: the time of a refusal does
# not tell which user_ids have codes. The code it hashes was thrown away.
DUMMY_HASH = ("scrypt$16384$8$1$4a61df0345e5629edae7d7caf54d51f1$"
              "52959e21ae95406906cc900a6bfc42daaf10b96f035a684aeb871fa9c137fa71")


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_GROUPS * GROUP_LEN))
    return "-".join(raw[i:i + GROUP_LEN] for i in range(0, len(raw), GROUP_LEN))


def normalize_code(text: str) -> str:
    """Accept what a person types: any case, with or without dashes and spaces,
    and the look-alike letters Crockford's alphabet maps to digits."""
    cleaned = "".join(ch for ch in (text or "").upper() if ch not in "- \t")
    return cleaned.translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))


def hash_code(code: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(normalize_code(code).encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_code(code: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != _SCHEME:
            return False
        digest = hashlib.scrypt(normalize_code(code).encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r),
                                p=int(p), dklen=len(digest_hex) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def verify_user_code(store: Store, user_id: str, code: str) -> str | None:
    """Check `code` for `user_id`: None when it matches, else "no_access_code" or "bad_access_code".

    Always runs exactly one scrypt, against a dummy hash when there is no
    code to check, so the answer takes the same time in every case.
    """
    user = store.get_user(user_id)
    stored = user.get("access_code_hash") if user else None
    ok = check_code(code, stored or DUMMY_HASH)
    if not stored:
        return "no_access_code"
    return None if ok else "bad_access_code"


def has_code(store: Store, user_id: str) -> bool:
    user = store.get_user(user_id)
    return bool(user and user.get("access_code_hash"))


def set_code(store: Store, user_id: str, *, rotate: bool = False, now: datetime | None = None,
             report: dict | None = None) -> str:
    """Make a new code for `user_id` (creating the user if needed) and return it.

    Refuses when the user already has one and `rotate` is false: the old code
    cannot be shown again, and replacing it silently would lock out whoever
    holds it. Rotating ends every gallery session of the user, in the same
    transaction; `report["sessions_ended"]` says how many.
    """
    from aigen.web import sessions

    validate_user_id(user_id)
    now = now or utcnow()
    now_s = iso(now)
    code = new_code()
    hashed = hash_code(code)
    with store.transaction() as db:
        db.conn.execute(
            "INSERT INTO users (user_id, created_at) VALUES (?, ?) ON CONFLICT(user_id) DO NOTHING", (user_id, now_s)
        )
        row = db.conn.execute(
            "SELECT access_code_hash, access_code_created_at FROM users WHERE user_id = ?", (user_id,)
        ).fetchone()
        if row["access_code_hash"] and not rotate:
            made = datetime.fromisoformat(row["access_code_created_at"]).astimezone().strftime("%Y-%m-%d %H:%M")
            raise BadInput(
                f"user {user_id!r} already has an access code (made {made}); "
                "only its hash is kept, so it cannot be shown again",
                hint=f"make a new one with `aigen user code {user_id} --rotate` (the old one stops working)",
            )
        db.conn.execute(
            "UPDATE users SET access_code_hash = ?, access_code_created_at = ? WHERE user_id = ?",
            (hashed, now_s, user_id),
        )
        ended = sessions.revoke_user(db, user_id, sessions.WHY_ROTATED, now) if row["access_code_hash"] else 0
    if report is not None:
        report["sessions_ended"] = ended
    return code


def revoke_code(store: Store, user_id: str, *, now: datetime | None = None, report: dict | None = None) -> bool:
    """Remove the user's code and end all their gallery sessions; returns whether there was a code."""
    from aigen.web import sessions

    validate_user_id(user_id)
    now = now or utcnow()
    with store.transaction() as db:
        row = db.conn.execute("SELECT access_code_hash FROM users WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown user {user_id!r}: no generations and no access code yet")
        db.conn.execute(
            "UPDATE users SET access_code_hash = NULL, access_code_created_at = NULL WHERE user_id = ?", (user_id,)
        )
        ended = sessions.revoke_user(db, user_id, sessions.WHY_CODE_REVOKED, now)
    if report is not None:
        report["sessions_ended"] = ended
    return bool(row["access_code_hash"])
