"""The front-door process: the OpenAI API on uvicorn and bert-as-service's protocol, on one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import warnings
from typing import Callable, Optional

from bertserve.client import TruncationWarning

from .bert_as_service import BertAsServiceServer
from .config import FrontDoorConfig
from .models import Models
from .openai import create_app

_log = logging.getLogger("bertserve.frontdoor")


def run(config: FrontDoorConfig) -> None:
    """Serve until SIGINT or SIGTERM, on uvloop where it is installed (uvicorn picks it only for loops it makes)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(config))


def _loop_factory() -> Optional[Callable[[], asyncio.AbstractEventLoop]]:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(config: FrontDoorConfig) -> None:
    import uvicorn

    # The SDK warns of truncated input; the door tells its clients itself (a header), and its log stays quiet.
    warnings.filterwarnings("ignore", category=TruncationWarning)
    models = Models(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks = []
    server = None
    if config.openai_port:
        server = uvicorn.Server(uvicorn.Config(
            create_app(config, models), host=config.host, port=config.openai_port, log_level="warning",
            lifespan="off", timeout_graceful_shutdown=5, server_header=False,
            timeout_keep_alive=30))  # clients keep pooled connections open between calls
        server.install_signal_handlers = lambda: None  # stopping is ours: both doors close together
        tasks.append(asyncio.create_task(server.serve()))
    if config.bert_as_service_port:
        tasks.append(asyncio.create_task(BertAsServiceServer(config, models).run()))
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done - {stopped}:
        if task.exception():  # a door that could not open (port taken) ends the process, with the reason
            _log.error("front door failed: %r", task.exception())
    if server is not None:
        server.should_exit = True  # uvicorn closes its connections itself
    for task in tasks[1 if server else 0:]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    models.close()
    failed = [t.exception() for t in done - {stopped} if t.exception()]
    if failed:
        raise SystemExit(f"bertserve frontdoor: {failed[0]}")
