"""The reference: a bare FastMCP server (mcp SDK, stateless JSON mode, uvicorn, no auth) with a
read tool equivalent to our ``get_ticker``: one Redis GET of the cached quote, returned as a dict.

Run: ``python bench/bare_fastmcp.py --port 8765 --redis-url redis://127.0.0.1:6379/0 --key <book key>``
"""
import argparse

import uvicorn

from _common import bare_fastmcp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--key-prefix", default="tmcp:")
    args = parser.parse_args()

    mcp = bare_fastmcp(args.redis_url, args.key_prefix)

    # The same uvicorn setup as ours (httptools + uvloop), so the comparison is of the apps.
    uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=args.port, log_level="warning",
                http="httptools", loop="uvloop", access_log=False)


if __name__ == "__main__":
    main()
