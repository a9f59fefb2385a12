"""Batching concurrent requests: requests that arrive while the generator is busy, or within
`max_wait_s` of each other, run as one batch.

Requests with the same sampling settings and stop strings share a generator call; each keeps
its own seed (the generator's `prompt_seeds`), so what a request gets does not depend on which
others it was batched with. Generation runs in one worker thread, so the event loop keeps
accepting requests meanwhile.
"""

import asyncio
import concurrent.futures
import dataclasses
import random
from typing import Any, Callable, Sequence

from llmjax.infer import SamplingParams

# generate(prompts, sampling, seeds, stop_strings) -> one list of Completions per prompt.
GenerateFn = Callable[[Sequence[Sequence[int]], SamplingParams, Sequence[int], tuple[str, ...]],
                      list[list[Any]]]


@dataclasses.dataclass
class _Pending:
  prompt: list[int]
  sampling: SamplingParams
  seed: int
  stop: tuple[str, ...]
  future: asyncio.Future


class RequestBatcher:
  """Args:
    generate: runs one batch (see GenerateFn); called from a worker thread.
    max_batch: most prompts per generator call.
    max_wait_s: how long the first request of a batch waits for company.
  """

  def __init__(self, generate: GenerateFn, max_batch: int = 16, max_wait_s: float = 0.005):
    self.generate, self.max_batch, self.max_wait_s = generate, max_batch, max_wait_s
    self._queue: asyncio.Queue | None = None
    self._worker: asyncio.Task | None = None
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self.batches = 0  # generator calls made
    self.requests = 0  # requests submitted

  async def submit(self, prompt: list[int], sampling: SamplingParams, seed: int | None,
                   stop: tuple[str, ...]) -> list[Any]:
    """The request's `sampling.n` completions."""
    if self._queue is None:
      self._queue = asyncio.Queue()
      self._worker = asyncio.create_task(self._run())
    self.requests += 1
    future = asyncio.get_running_loop().create_future()
    seed = random.getrandbits(31) if seed is None else seed
    await self._queue.put(_Pending(list(prompt), sampling, seed, stop, future))
    return await future

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = [await self._queue.get()]
      deadline = loop.time() + self.max_wait_s
      while len(batch) < self.max_batch:
        timeout = deadline - loop.time()
        try:
          batch.append(await asyncio.wait_for(self._queue.get(), max(timeout, 0)) if timeout > 0
                       else self._queue.get_nowait())
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
          break
      groups: dict[tuple, list[_Pending]] = {}
      for item in batch:
        groups.setdefault((item.sampling, item.stop), []).append(item)
      for (sampling, stop), items in groups.items():
        try:
          self.batches += 1
          results = await loop.run_in_executor(
              self._executor, self.generate, [i.prompt for i in items], sampling,
              [i.seed for i in items], stop)
        except Exception as e:  # noqa: BLE001 - each request gets the error
          for item in items:
            if not item.future.done():
              item.future.set_exception(e)
          continue
        for item, completions in zip(items, results):
          if not item.future.done():
            item.future.set_result(completions)

  def close(self) -> None:
    if self._worker is not None:
      self._worker.cancel()
    self._executor.shutdown(wait=False)
