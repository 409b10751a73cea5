"""A small HTTP/WebSocket client of imflow's API v1, as a chat app would use it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

SEND_RETRY_FOR_S = 15.0  # how long `send` keeps retrying a 503


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base_url = base_url
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base_url + path, headers=self.headers,
                                        **kwargs) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body

    async def ok(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        status, body = await self.request(method, path, **kwargs)
        if status != expect:
            raise ApiError(status, body)
        return body

    async def send(self, *, to: str | None = None, conversation: str | None = None,
                   client_msg_id: str, body: Any = None, type: str = "text") -> Any:
        payload: dict[str, Any] = {"client_msg_id": client_msg_id, "body": body, "type": type}
        if to is not None:
            payload["to"] = to
        if conversation is not None:
            payload["conversation"] = conversation
        # As a client should: a 503 (Kafka down, or the pipeline overloaded) is retried
        # after its Retry-After with the same client_msg_id, which is stored once.
        deadline = asyncio.get_running_loop().time() + SEND_RETRY_FOR_S
        while True:
            async with self.session.post(self.base_url + "/v1/messages", json=payload,
                                         headers=self.headers) as resp:
                answer = await resp.json(content_type=None)
                wait = float(resp.headers.get("Retry-After", "1"))
            if resp.status == 202:
                return answer
            if resp.status != 503 or asyncio.get_running_loop().time() + wait > deadline:
                raise ApiError(resp.status, answer)
            await asyncio.sleep(wait)

    async def sync(self, **params: Any) -> Any:
        return await self.ok("GET", "/v1/sync", params={k: str(v) for k, v in params.items()})

    async def history(self, cid: str, **params: Any) -> Any:
        return await self.ok("GET", f"/v1/conversations/{cid}/messages",
                             params={k: str(v) for k, v in params.items()})

    def ws(self) -> Any:
        return self.session.ws_connect(self.base_url + "/v1/ws", headers=self.headers)
