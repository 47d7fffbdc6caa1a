"""An LLM judge as a reasoning-step matcher, over any OpenAI-compatible chat endpoint.

`JudgeMatcher` asks the judge once per sample which generated steps state the same fact as
which reference steps, and turns its JSON reply into the 0/1 similarity matrix that
:func:`medvl.eval.reasoning.score_reasoning` takes. The endpoint is anything that speaks
``POST {base_url}/chat/completions`` (OpenAI, vLLM's and llama.cpp's servers, Ollama's
``/v1``); a local model served that way keeps every scan's text on the machine::

    export MEDVL_JUDGE_BASE_URL=http://127.0.0.1:8000/v1
    export MEDVL_JUDGE_MODEL=Qwen2.5-7B-Instruct
    export MEDVL_JUDGE_API_KEY=...            # if the server wants one
    medvl eval --config configs/eval_tiny.yaml --reasoning_matcher judge

Or a model in this process, with no server at all (`local_chat`; ``judge_model`` in
`medvl.eval.runner.EvalConfig`): any Qwen-VL folder, or a medvl checkpoint, answers the same
prompt text-only::

    medvl eval --config configs/eval_tiny.yaml --reasoning_matcher judge \
        --judge_model /models/Qwen2.5-VL-7B-Instruct

Only the steps' text is sent, never an image or a path. Replies are cached per (generated,
reference) pair of lists, so a rerun of the same text costs nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["JudgeError", "JudgeMatcher", "local_chat", "openai_chat"]

ENV_BASE_URL = "MEDVL_JUDGE_BASE_URL"
ENV_MODEL = "MEDVL_JUDGE_MODEL"
ENV_API_KEY = "MEDVL_JUDGE_API_KEY"

SYSTEM = (
    "You compare the reasoning steps of a medical image model with reference steps. A "
    "generated step matches a reference step when it states the same fact: the same finding, "
    "side, location, grade and yes/no conclusion; wording may differ. Each step matches at "
    'most one step of the other list. Reply with JSON only: {"matches": [[g, r], ...]} with '
    "g the generated step's number and r the reference step's number."
)


class JudgeError(RuntimeError):
    """The judge could not be reached, refused, or replied with something unreadable."""


def openai_chat(
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    retries: int = 2,
) -> Callable[[str, str], str]:
    """A ``complete(system, user) -> reply text`` function for an OpenAI-compatible endpoint.

    Args:
        base_url: E.g. ``http://127.0.0.1:8000/v1``; default ``$MEDVL_JUDGE_BASE_URL``.
        model: The model name the server knows; default ``$MEDVL_JUDGE_MODEL``.
        api_key: Sent as a bearer token; default ``$MEDVL_JUDGE_API_KEY`` (none if unset).
        timeout: Seconds per request.
        retries: Further tries after a connection error or a 429/5xx reply (1 s, 2 s, ...).

    Raises:
        JudgeError: No base URL or model given or set in the environment.
    """
    base_url = base_url or os.environ.get(ENV_BASE_URL)
    model = model or os.environ.get(ENV_MODEL)
    api_key = api_key or os.environ.get(ENV_API_KEY)
    if not base_url or not model:
        raise JudgeError(
            f"the LLM judge needs an endpoint and a model: set {ENV_BASE_URL} (e.g. "
            f"http://127.0.0.1:8000/v1) and {ENV_MODEL}, or pass base_url= and model="
        )
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def complete(system: str, user: str) -> str:
        body = json.dumps({
            "model": model, "temperature": 0,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user}],
        }).encode("utf-8")  # fmt: skip
        for attempt in range(retries + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:200]
                if e.code != 429 and e.code < 500 or attempt == retries:
                    raise JudgeError(f"judge at {url} answered HTTP {e.code}: {detail}") from e
            except urllib.error.URLError as e:
                if attempt == retries:
                    raise JudgeError(f"judge at {url} unreachable: {e.reason}") from e
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise JudgeError(f"judge at {url} sent no chat completion: {e!r}") from e
            time.sleep(2**attempt)
        raise AssertionError("unreachable")

    return complete


def local_chat(
    model: Any, max_new_tokens: int = 256, device: str = "cpu"
) -> Callable[[str, str], str]:
    """A judge in this process: ``complete(system, user)`` answered by a local model, text only.

    Decoding is greedy, so a judge gives the same verdict on every rerun.

    Args:
        model: A loaded `medvl.model.MedVLM`, or what `MedVLM.from_pretrained` takes (a
            Qwen-VL folder, a medvl checkpoint, ``tiny:<family>-<size>``).
        max_new_tokens: Longest reply (a JSON list of pairs is short).
        device: Where a model named by path is loaded.

    Raises:
        JudgeError: The model cannot be loaded (its path and the reason named).
    """
    import torch

    from medvl.model import MedVLM

    if not isinstance(model, MedVLM):
        try:
            model = MedVLM.from_pretrained(model, device=device)
        except (OSError, ValueError) as e:
            raise JudgeError(f"cannot load the judge model {model}: {e}") from e
    model.eval()
    tokenizer = model.tokenizer

    def complete(system: str, user: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)  # fmt: skip
        prompt = ids["input_ids"].to(model.device)
        with torch.inference_mode():
            out = model.model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)

    return complete


def _numbered(steps: Sequence[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


_JSON = re.compile(r"\{.*\}", re.S)


class JudgeMatcher:
    """Step matching by an LLM judge (one request per sample).

    Args:
        complete: ``complete(system, user) -> text``; default `openai_chat()` from the
            environment.
        threshold: Kept for the matcher protocol: the judge's similarities are 0 or 1.
    """

    def __init__(
        self, complete: Callable[[str, str], str] | None = None, threshold: float = 0.5
    ) -> None:
        self.complete = complete or openai_chat()
        self.threshold = float(threshold)
        self._cache: dict[tuple[tuple[str, ...], tuple[str, ...]], np.ndarray] = {}

    def similarity(self, generated: Sequence[str], reference: Sequence[str]) -> np.ndarray:
        """1.0 where the judge matched generated step i to reference step j, else 0.0.

        Raises:
            JudgeError: The reply holds no readable ``{"matches": [[g, r], ...]}``.
        """
        key = (tuple(generated), tuple(reference))
        if key in self._cache:
            return self._cache[key].copy()
        sim = np.zeros((len(generated), len(reference)), dtype=np.float32)
        if generated and reference:
            user = (f"Generated steps:\n{_numbered(generated)}\n\n"
                    f"Reference steps:\n{_numbered(reference)}")  # fmt: skip
            reply = self.complete(SYSTEM, user)
            found = _JSON.search(reply or "")
            try:
                pairs = json.loads(found.group(0))["matches"] if found else None
                for g, r in pairs:
                    if 1 <= int(g) <= len(generated) and 1 <= int(r) <= len(reference):
                        sim[int(g) - 1, int(r) - 1] = 1.0
            except (TypeError, ValueError, KeyError) as e:
                raise JudgeError(
                    f'the judge\'s reply is not {{"matches": [[g, r], ...]}}: {reply[:200]!r}'
                ) from e
        self._cache[key] = sim
        return sim.copy()
