"""`ponder serve` (the HTTP server) and `ponder worker` (schedules and background runs)."""

from __future__ import annotations

import asyncio

import typer

from ponder.cli.common import (
    app,
    console,
    errors,
)


@app.command()
def serve(
    targets: list[str] = typer.Argument(..., help="Agents to serve (see TARGET above)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    schedules: bool = typer.Option(False, "--schedules", help="Also fire due schedules and "
                                   "execute background runs, as ponder worker does."),
    queue: bool = typer.Option(False, "--queue", help="Send background runs through the "
                               "procrastinate queue to ponder worker --queue (Postgres)."),
) -> None:
    """Serve agents over the OpenAI-compatible API (/v1/chat/completions, /v1/responses,
    /v1/models), the LangGraph Agent Server API (assistants, threads, runs, crons, store) and
    MCP (/mcp), with a chat page."""
    import os

    import uvicorn

    from ponder.server.app import (
        SERVE_QUEUE_ENV,
        SERVE_SCHEDULES_ENV,
        SERVE_TARGETS_ENV,
        create_app,
    )

    # Errors show before serving.
    app = create_app(targets, run_schedules=schedules, queue=queue)
    console.print(f"serving {', '.join(app.state.served)} on http://{host}:{port}/v1")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    else:
        os.environ[SERVE_TARGETS_ENV] = ",".join(targets)
        os.environ[SERVE_SCHEDULES_ENV] = "1" if schedules else ""
        os.environ[SERVE_QUEUE_ENV] = "1" if queue else ""
        uvicorn.run("ponder.server.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level="warning")


@app.command("mcp")
def mcp(
    targets: list[str] = typer.Argument(..., help="Agents to serve (see TARGET above)."),
) -> None:
    """Serve agents over the Model Context Protocol on stdin and stdout, for desktop clients
    that launch a command: each agent is a tool (message, thread_id), each knowledge base an
    agent uses a search tool. Every call is a recorded run (ponder runs list)."""
    from ponder.server.app import create_app
    from ponder.server.mcp_server import serve_stdio

    app = create_app(targets)  # errors show before serving; stdout is the protocol's
    errors.print(f"[dim]serving {', '.join(app.state.served)} over MCP on stdio[/]")
    asyncio.run(serve_stdio(app))


@app.command()
def worker(
    queue: bool = typer.Option(False, "--queue", help="Take runs from the procrastinate queue "
                               "(Postgres; run as many workers as you like)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Runs at once."),
    stale: float = typer.Option(10.0, "--stale", help="Seconds without a heartbeat before "
                                "another worker takes a run over."),
) -> None:
    """Fire due schedules and execute background runs until stopped (SIGINT or SIGTERM:
    current runs finish, or are handed back checkpointed)."""
    import signal

    from ponder.graphs.workers import Worker

    async def work() -> None:
        runner = Worker(queue=queue, concurrency=concurrency, stale_s=stale,
                        heartbeat_s=min(1.0, stale / 3))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.stop)
        errors.print(f"[dim]worker {runner.id} ({'queue' if queue else 'embedded'}) on "
                     f"{runner.url}[/]")
        await runner.run()

    asyncio.run(work())
