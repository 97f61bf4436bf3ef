"""A FastMCP server for the MCP client's tests, run as users run theirs: ``python mcp_server.py``
speaks stdio; ``python mcp_server.py --http PORT`` serves streamable HTTP on 127.0.0.1:PORT/mcp
(uvicorn), with GET /health for the test to wait on.

Its tools: a counter whose count is per MCP session, a tool that asks the user (elicitation),
a nap that reports how many naps ran at once,
an image, an embedded resource, an ``add`` that validates its arguments, ``pid`` (to kill a stdio
server between calls) and ``unlock``, which adds a tool and says so (tools/list_changed).
"""

import asyncio
import os
import sys
from dataclasses import dataclass

import mcp.types
from fastmcp import Context, FastMCP
from fastmcp.utilities.types import Image
from starlette.requests import Request
from starlette.responses import PlainTextResponse

server = FastMCP("counter")
counts: dict[str, int] = {}  # by MCP session: one process serves many over HTTP

# A 1x1 PNG.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082")


@server.tool(annotations={"readOnlyHint": False, "destructiveHint": False})
async def count(ctx: Context, step: int = 1) -> int:
    """Add step to this session's counter and return the new count."""
    counts[ctx.session_id] = counts.get(ctx.session_id, 0) + step
    return counts[ctx.session_id]


@server.tool(annotations={"readOnlyHint": True})
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(annotations={"destructiveHint": True})
def pid() -> int:
    """The process id of this server."""
    return os.getpid()


naps = {"now": 0, "peak": 0}


@server.tool
async def nap(seconds: float) -> int:
    """Sleep, then return the most naps that were in progress at once so far."""
    naps["now"] += 1
    naps["peak"] = max(naps["peak"], naps["now"])
    await asyncio.sleep(seconds)
    naps["now"] -= 1
    return naps["peak"]


@server.tool
def picture() -> Image:
    """A picture of one pixel."""
    return Image(data=PIXEL, format="png")


@server.tool
def readme() -> mcp.types.EmbeddedResource:
    """The readme, as an embedded resource."""
    return mcp.types.EmbeddedResource(type="resource", resource=mcp.types.TextResourceContents(
        uri="file:///readme.txt", mimeType="text/plain", text="Counting since 2026."))


@dataclass
class Order:
    tea: str
    grams: int


@server.tool
async def order(ctx: Context) -> str:
    """Order tea: asks the user which tea and how much."""
    answer = await ctx.elicit("Which tea, and how many grams?", response_type=Order)
    if answer.action != "accept":
        return f"No order ({answer.action})."
    return f"Ordered {answer.data.grams} g of {answer.data.tea}."


@server.tool
async def greet(ctx: Context) -> str:
    """Greet the user by name (asks for it)."""
    answer = await ctx.elicit("What is your name?", response_type=str)
    return f"Hello, {answer.data}!" if answer.action == "accept" else "Hello, stranger."


def secret() -> str:
    """The secret, once unlocked."""
    return "opensesame"


@server.tool
async def unlock(ctx: Context) -> str:
    """Unlock the secret tool."""
    server.add_tool(secret)
    await ctx.send_notification(mcp.types.ToolListChangedNotification())
    return "unlocked"


@server.custom_route("/health", methods=["GET"])
async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.run(transport="http", host="127.0.0.1", port=int(sys.argv[2]),
                   log_level="warning", show_banner=False)
    else:
        server.run(show_banner=False, log_level="WARNING")
