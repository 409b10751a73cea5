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


@pytest.mark.parametrize(("token", "code"), [
    (jwt.encode({"sub": "a", "exp": int(time.time()) - 1}, SECRET, algorithm="HS256"),
     "token_expired"),
    (jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256"),
     "invalid_token"),
    (jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"), "invalid_token"),
    (jwt.encode({"sub": "a b", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
     "invalid_token"),
    ("garbage", "invalid_token"),
])
def test_bad_tokens_are_refused(token: str, code: str) -> None:
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
