"""The reference: a bare FastMCP server (mcp SDK, stateless JSON mode, uvicorn, no auth) with a
read tool equivalent to our ``get_ticker``: one Redis GET of the cached quote, returned as a dict.

Run: ``python bench/bare_fastmcp.py --port 8765 --redis-url redis://127.0.0.1:6379/0 --key <book key>``
"""
import argparse

import orjson
import redis.asyncio as aredis
import uvicorn
from mcp.server.fastmcp import FastMCP


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--key-prefix", default="tmcp:")
    args = parser.parse_args()

    mcp = FastMCP("bare", stateless_http=True, json_response=True, log_level="WARNING")
    redis = aredis.Redis.from_url(args.redis_url)

    @mcp.tool()
    async def get_ticker(symbol: str) -> dict:
        """Latest best bid/ask of a symbol from the Redis cache."""
        raw = await redis.get(f"{args.key_prefix}md:book:{symbol.upper()}")
        return orjson.loads(raw) if raw else {}

    # The same uvicorn setup as ours (httptools + uvloop), so the comparison is of the apps.
    uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=args.port, log_level="warning",
                http="httptools", loop="uvloop", access_log=False)


if __name__ == "__main__":
    main()
