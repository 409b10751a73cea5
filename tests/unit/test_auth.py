"""Token verification: every rejection reason, and the verified-token cache's limits."""

from __future__ import annotations

import time

import jwt
import pytest

from app.auth import TokenVerifier, mint_token, verify_token
from app.errors import Unauthorized

SECRET = "k" * 40


def test_a_minted_token_verifies_to_its_user_and_device() -> None:
    identity = verify_token(SECRET, mint_token(SECRET, "alice", device="phone"))
    assert (identity.user, identity.device) == ("alice", "phone")


@pytest.mark.parametrize(("claims", "key", "code"), [
    ({"sub": "a", "exp": -1}, SECRET, "token_expired"),
    ({"sub": "a", "exp": 60}, "x" * 40, "invalid_token"),
    ({"sub": "a"}, SECRET, "invalid_token"),
    ({"sub": "a b", "exp": 60}, SECRET, "invalid_token"),
    (None, SECRET, "invalid_token"),
])
def test_bad_tokens_are_refused(claims: dict[str, object] | None, key: str, code: str) -> None:
    """Tokens are made when the test runs (`exp` relative to now): made at collection,
    a token valid for 60 s had expired by the time a long session reached it."""
    token = "garbage"
    if claims is not None:
        now = int(time.time())
        claims = {k: now + v if k == "exp" and isinstance(v, int) else v
                  for k, v in claims.items()}
        token = jwt.encode(claims, key, algorithm="HS256")
    with pytest.raises(Unauthorized) as caught:
        TokenVerifier(SECRET).verify(token)
    assert caught.value.code == code


def test_a_cached_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(SECRET)
    short = mint_token(SECRET, "alice", ttl_s=1)
    assert verifier.verify(short).user == "alice"
    assert verifier.verify(short).user == "alice"  # from the cache
    time.sleep(1.1)  # the token's own 1 s lifetime has to pass; there is no event to await
    with pytest.raises(Unauthorized):
        verifier.verify(short)


def test_the_cache_stays_bounded() -> None:
    verifier = TokenVerifier(SECRET, size=2)
    tokens = [mint_token(SECRET, user) for user in ("bob", "carol", "dave")]
    for token in tokens:
        verifier.verify(token)
    assert list(verifier._verified) == tokens[1:]
