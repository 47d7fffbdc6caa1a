"""The inference half of :class:`medvl.model.MedVLM`: answer, answer_batch, stream_answer.

A question goes through the same encoder as an SFT example (:mod:`medvl.model.encoding`), so a
model is asked exactly as it was trained. Several questions are batched with left padding, so
every reply starts right after its prompt; replies end at the first end-of-turn or padding id.
The text is read by :func:`medvl.model.replies.parse_answer`; the grounding heads, when present,
read the hidden states of one more forward pass over prompt and reply
(:mod:`medvl.model.heads.readout`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from medvl.model.encoding import Encoded, encode_example, merge_encodings
from medvl.model.heads import gather_token_states
from medvl.model.heads.readout import (
    capture_vision,
    extend_with_reply,
    first_per_row,
    mask_in_scan,
    pictures_by_row,
)
from medvl.model.inputs import Question, as_scan
from medvl.model.loading import unwrap
from medvl.model.prompts import PromptSettings
from medvl.model.replies import Answer, parse_answer
from medvl.scans.views import FrameView


class AnsweringMixin:
    """Answering for ``MedVLM``, which provides ``model``, ``processor``, ``config``, ``heads``,
    ``tokenizer``, ``device``, ``family`` and the private ``_box_id``, ``_seg_id``,
    ``_base_config``, ``_head_token_strings``."""

    def answer(
        self,
        question: Question,
        max_new_tokens: int = 256,
        reasoning: bool | None = None,
        view: str | None = None,
        n_frames: int | None = None,
        do_sample: bool = False,
        **generate_kwargs: Any,
    ) -> Answer:
        """Ask one question about a scan or image and read the reply::

            vlm.answer(Question("knee.nii.gz", "Is there a meniscal tear?", answer_type="closed"))

        Args:
            question: The scan and what is asked about it (`medvl.model.inputs.Question`).
            max_new_tokens: Most tokens to generate.
            reasoning: Ask for reasoning first; default the config's (True unless trained
                otherwise).
            view: How a volume is shown (``frames``, ``montage``, ``slice``, ``mip``); default the
                config's (``frames``).
            n_frames: Frames / tiles of a volume; default the config's (16).
            do_sample: Sample instead of greedy decoding.
            **generate_kwargs: Passed to ``generate`` (``temperature``, ``top_p``...).

        Returns:
            An :class:`medvl.model.replies.Answer`. The box is the box head's when the model has
            one for the scan's dimensionality and either the reply contains ``<|box|>`` or the
            question is a grounding one (then ``<|box|>`` is appended after the reply and read
            there: a grounding question always gets the head's box); else the reply's text box.
            With a mask head, ``mask`` follows the same rule with ``<|seg|>`` (2D scans and
            frame views). Both are in medvl's normalised scan coordinates.
        """
        return self.answer_batch(
            [question], max_new_tokens, reasoning, view, n_frames, do_sample, **generate_kwargs
        )[0]

    @torch.inference_mode()
    def answer_batch(
        self,
        questions: Sequence[Question],
        max_new_tokens: int = 256,
        reasoning: bool | None = None,
        view: str | None = None,
        n_frames: int | None = None,
        do_sample: bool = False,
        **generate_kwargs: Any,
    ) -> list[Answer]:
        """Answer several questions in one batched generation (left padding).

        Args:
            questions: The questions, each with its scan.
            max_new_tokens, reasoning, view, n_frames, do_sample, **generate_kwargs: As for
                :meth:`answer`.

        Returns:
            One :class:`Answer` per question, in order.
        """
        settings = self._settings(reasoning, view, n_frames)
        encoded = [self._encode_question(q, settings) for q in questions]
        inputs = self._batch([e.inputs for e in encoded], "left")
        output = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=do_sample,
            pad_token_id=self.tokenizer.pad_token_id, **generate_kwargs,
        )  # fmt: skip
        completions = [self._completion(row) for row in output[:, inputs["input_ids"].shape[1] :]]
        answers = [
            parse_answer(self._decode(ids), self.family, e.context, self._head_token_strings)
            for ids, e in zip(completions, encoded, strict=True)
        ]
        if len(self.heads):
            self._read_heads(encoded, completions, answers)
        return answers

    def stream_answer(
        self,
        question: Question,
        max_new_tokens: int = 256,
        reasoning: bool | None = None,
        view: str | None = None,
        n_frames: int | None = None,
        do_sample: bool = False,
        reply_ids: list[int] | None = None,
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """Yield the reply's text piece by piece as it is generated (for the demo).

        Arguments as for :meth:`answer`. Generation runs in a thread feeding a transformers
        ``TextIteratorStreamer``; the pieces join into ``answer(...).raw`` (special tokens kept,
        end-of-turn and padding dropped). Text only: parse the joined text with
        :func:`~medvl.model.replies.parse_answer` (context from :meth:`encode_question`), or call
        :meth:`answer` for the heads; or pass a list as ``reply_ids``, which collects the
        generated ids, and give it to :meth:`read_reply` for the heads' box and mask. An error in
        generation is raised here; closing the generator early stops generation at the next token.
        """
        settings = self._settings(reasoning, view, n_frames)
        inputs = self._batch([self._encode_question(question, settings).inputs], "left")
        streamer = _Streamer(self.tokenizer, self._stop_ids, reply_ids, skip_prompt=True,
                             skip_special_tokens=False)  # fmt: skip
        failure: list[BaseException] = []
        closed = threading.Event()  # set when the consumer stops listening
        stopping = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
        stopping.append(_WhenSet(closed))

        @torch.inference_mode()
        def generate() -> None:
            try:
                self.model.generate(
                    **inputs, streamer=streamer, max_new_tokens=max_new_tokens,
                    do_sample=do_sample, pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=stopping, **generate_kwargs,
                )  # fmt: skip
            except BaseException as error:  # noqa: BLE001 - handed to the consumer below
                failure.append(error)
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            closed.set()
            thread.join()
        if failure:
            raise failure[0]

    @torch.inference_mode()
    def read_reply(
        self,
        question: Question,
        reply: str | Sequence[int],
        reasoning: bool | None = None,
        view: str | None = None,
        n_frames: int | None = None,
    ) -> Answer:
        """Read a finished reply as :meth:`answer` reads its own: reasoning, answer, text box,
        and the heads' box and mask from one forward over prompt + reply (no generation).

        What the demo calls after :meth:`stream_answer` with the ids it collected in
        ``reply_ids``: the result equals :meth:`answer`'s for the same reply.

        Args:
            question: The question the reply answers.
            reply: The generated ids (exact), or the reply's text (tokenised again, which may
                split it differently from how it was generated, so the heads may read another
                box).
            reasoning, view, n_frames: As for :meth:`answer` (they shape the prompt).
        """
        encoded = self._encode_question(question, self._settings(reasoning, view, n_frames))
        if isinstance(reply, str):
            ids = self.tokenizer(reply, add_special_tokens=False, return_tensors="pt").input_ids[0]
        else:
            ids = torch.tensor(list(reply), dtype=torch.long)
        answer = parse_answer(self._decode(ids), self.family, encoded.context,
                              self._head_token_strings)  # fmt: skip
        if len(self.heads):
            self._read_heads([encoded], [ids], [answer])
        return answer

    def encode_question(
        self,
        question: Question,
        reasoning: bool | None = None,
        view: str | None = None,
        n_frames: int | None = None,
    ) -> Encoded:
        """The model inputs (batch of one) and :class:`~medvl.model.replies.AnswerContext` of a
        question, exactly as :meth:`answer` builds them; arguments as for :meth:`answer`.

        With ``parse_answer(raw, model.family, encoded.context)`` any reply text can be read the
        way :meth:`answer` reads the model's own (evaluation of stored outputs, tests).
        """
        return self._encode_question(question, self._settings(reasoning, view, n_frames))

    # -- internals --------------------------------------------------------------------------

    def _settings(self, reasoning: bool | None, view: str | None, n: int | None) -> PromptSettings:
        prompt = self.config.prompt
        return dataclasses.replace(
            prompt,
            reasoning=prompt.reasoning if reasoning is None else reasoning,
            view=view or prompt.view,
            n_frames=n or prompt.n_frames,
        )

    def _encode_question(self, question: Question, settings: PromptSettings) -> Encoded:
        if not isinstance(question, Question):
            raise TypeError(
                f"expected a medvl.model.Question(scan, text, ...), got {type(question).__name__}"
            )
        scan = as_scan(question.scan)
        meta = getattr(scan, "meta", None) or {}
        # "OT" is load_scan's "unknown": naming it would only confuse the prompt.
        known = meta.get("modality") if meta.get("modality") not in (None, "", "OT") else ""
        example = {
            "scan": scan, "question": question.text, "options": question.options,
            "answer_type": question.answer_type,
            "modality": question.modality or known, "anatomy": question.anatomy or "",
        }  # fmt: skip
        return encode_example(self.processor, self.family, example, settings)

    def _batch(self, encodings: Sequence[Mapping[str, torch.Tensor]], side: str) -> dict:
        batch = merge_encodings(encodings, self.tokenizer.pad_token_id, side)
        return {k: v.to(self.device) for k, v in batch.items()}

    @property
    def _stop_ids(self) -> list[int]:
        eos = getattr(unwrap(self.model).generation_config, "eos_token_id", None)
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        pad = self.tokenizer.pad_token_id
        return sorted({*eos, *([pad] if pad is not None else [])})

    def _completion(self, row: torch.Tensor) -> torch.Tensor:
        """Generated ids up to (not including) the first end-of-turn or padding token."""
        stops = torch.isin(row, torch.tensor(self._stop_ids, device=row.device))
        end = int(stops.nonzero()[0]) if stops.any() else row.shape[0]
        return row[:end].cpu()

    def _decode(self, ids: torch.Tensor) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _read_heads(
        self, encoded: list[Encoded], replies: list[torch.Tensor], answers: list[Answer]
    ) -> None:
        """Fill head boxes and masks (see :meth:`answer` for when): one forward over each
        prompt + reply, with ``<|box|>`` / ``<|seg|>`` appended where the reply lacks them."""
        extended, wants = [], []
        for e, reply in zip(encoded, replies, strict=True):
            ctx, grounding = e.context, e.context.answer_type == "grounding"
            want_box = f"box{ctx.scan_ndim}d" in self.heads and (grounding or self._box_id in reply)
            mask_view = ctx.view is None or isinstance(ctx.view, FrameView)
            want_mask = "mask" in self.heads and mask_view and (grounding or self._seg_id in reply)
            extra = [
                token for token, want in ((self._box_id, want_box), (self._seg_id, want_mask))
                if want and token not in reply
            ]  # fmt: skip
            extended.append(extend_with_reply(e.inputs, reply, extra))
            wants.append((want_box, want_mask))
        if not any(box or mask for box, mask in wants):
            return
        batch = self._batch(extended, "left")
        with capture_vision(self.model, on=any(mask for _, mask in wants)) as captured:
            out = self.model(**batch, output_hidden_states=True)
        hidden, input_ids = out.hidden_states[-1], batch["input_ids"]
        if any(box for box, _ in wants):
            states, rows = first_per_row(*gather_token_states(hidden, input_ids, self._box_id))
            for state, row in zip(states, rows.tolist(), strict=True):
                if wants[row][0]:
                    head = self.heads[f"box{encoded[row].context.scan_ndim}d"]
                    state = state.to(next(head.parameters()).device)
                    answers[row].box = head(state[None])[0].float().cpu().tolist()
                    answers[row].box_source = "head"
        if any(mask for _, mask in wants):
            pictures = pictures_by_row(captured, batch, input_ids, self._base_config)
            states, rows = first_per_row(*gather_token_states(hidden, input_ids, self._seg_id))
            for state, row in zip(states, rows.tolist(), strict=True):
                if wants[row][1] and pictures[row] is not None:
                    answers[row].mask = mask_in_scan(
                        self.heads["mask"], state, pictures[row], encoded[row].context
                    )


class _Streamer(TextIteratorStreamer):
    """A ``TextIteratorStreamer`` that drops end-of-turn and padding ids, as ``answer`` does."""

    def __init__(
        self, tokenizer: Any, drop_ids: Sequence[int], kept: list[int] | None, **kwargs: Any
    ) -> None:
        super().__init__(tokenizer, **kwargs)
        self.drop_ids = torch.tensor(list(drop_ids))
        self.kept = kept  # the caller's list of the reply's ids, or None

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            value = value.reshape(-1).cpu()
            value = value[~torch.isin(value, self.drop_ids)]
            if value.numel() == 0:
                return
            if self.kept is not None:
                self.kept.extend(value.tolist())
        super().put(value)


class _WhenSet(StoppingCriteria):
    """Stop generating once an event is set (the stream's consumer went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = self.event.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
