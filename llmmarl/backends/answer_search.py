"""Exact answer distributions for the transformers backend: every answer a request can get, with its probability.

:meth:`~llmmarl.backends.transformers.TransformersBackend.answer_distribution` serves the optional
:class:`~llmmarl.backends.base.AnswerReader` capability. Sampling an answer is a walk down a tree: each node is the
answer so far, each child one more token, drawn from the model's next-token distribution as ``generate`` draws it
(the grammar mask, then the temperature, then top-p; greedy is the arg max). This module walks that tree
breadth-first instead of sampling it, so the probability of a finished answer is the product of its tokens'
probabilities, summed over every token path that spells the same text (a grammar lets a word be spelled by
several tokenisations; each has its own probability and all of them count).

Cost: one forward pass of the prompts (their common prefix from the prefix cache), then one batched pass per answer
token over the tree's live nodes, each feeding only its answer tokens on top of its prompt's keys/values. An
ACTION-only turn under the grammar ("ACTION: <label>" and the end token) is a handful of tokens deep and a few
nodes wide per label, so the whole distribution costs a few short passes.

What is not walked is counted, never dropped: a path whose probability falls below ``min_prob``, or beyond the
``max_nodes`` most probable of its depth, adds its probability to ``unexplored``. The answers' probabilities plus
``unexplored`` sum to 1; ``unexplored`` bounds how far any probability read here is from the exact one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from llmmarl.backends.base import AnswerDistribution, AnswerQuery

if TYPE_CHECKING:
    from llmmarl.backends.transformers import TransformersBackend

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (rows, kv_heads, tokens, head_dim)


@dataclass
class _Node:
    query: int  # index of the query (within its adapter group)
    path: list[int]  # answer tokens after the query's prefix_ids
    logprob: float
    matcher: Any | None  # xgrammar matcher after prefix_ids + path; None without a grammar
    parent: int = -1  # the parent's row in the previous pass (its answer tokens' keys/values)


@dataclass
class _Walk:
    """The search's bookkeeping for one query."""

    answers: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    unexplored: float = 0.0
    nodes: int = 0


def _next_logprobs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """(N, V) masked logits -> (N, V) log-probabilities of the next token as generation draws it."""
    logits = logits.float()
    if temperature <= 0:  # greedy: all mass on the arg max
        out = torch.full_like(logits, float("-inf"))
        return out.scatter_(1, logits.argmax(dim=-1, keepdim=True), 0.0)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    if top_p < 1.0:  # the nucleus exactly as SeededSampler keeps it, renormalised
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        p = sorted_lp.exp()
        drop_sorted = p.cumsum(dim=-1) - p >= top_p
        logp = logp.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
        logp = logp - torch.logsumexp(logp, dim=-1, keepdim=True)
    return logp


class AnswerSearch:
    """The tree walk for one group of queries that share an adapter."""

    def __init__(
        self,
        backend: TransformersBackend,
        queries: Sequence[AnswerQuery],
        min_prob: float,
        max_nodes: int,
        rows_per_pass: int,
    ) -> None:
        self.b = backend
        self.queries = list(queries)
        self.min_logprob = math.log(min_prob)
        self.max_nodes = max_nodes
        self.rows = rows_per_pass
        self.walks = [_Walk() for _ in queries]
        self.eos = backend.tokenizer.eos_token_id
        self.vocab = backend.model.config.vocab_size
        self._path_kv: KV = []  # answer tokens' keys/values of the previous pass, one row per node

    # ---- the prompts ---------------------------------------------------------------------------------------------
    def _prompts(self) -> tuple[KV, torch.Tensor, list[int], torch.Tensor]:
        """Keys/values of every query's prompt (+ prefix_ids), left-padded to one width.

        Returns (kv with one row per query, attention mask (Q, W), real length per query, last logits (Q, V)).
        """
        prompts = [self.b.prompt_ids(q.request) + list(q.prefix_ids) for q in self.queries]
        adapter = self.queries[0].request.adapter
        prefix = self.b._shared_prefix([q.request for q in self.queries], prompts)
        n = len(prefix)
        width = max(len(p) - n for p in prompts)
        pad = self.b.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), n + width), dtype=torch.long)
        mask[:, :n] = 1
        pos = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            own = p[n:]
            ids[row, width - len(own) :] = torch.tensor(own)
            mask[row, n + width - len(own) :] = 1
            pos[row, width - len(own) :] = torch.arange(n, n + len(own))
        config = self.b.model.config.get_text_config(decoder=True)
        if n:
            kv = self.b._prefix_kv(adapter or "__base__", prefix)
            rows = len(prompts)
            cache = DynamicCache(
                ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv],
                config=config,
            )
        else:
            cache = DynamicCache(config=config)
        out = self.b.model(
            input_ids=ids.to(self.b.device),
            attention_mask=mask.to(self.b.device),
            position_ids=pos.to(self.b.device),
            past_key_values=cache,
            use_cache=True,
            **self._adapter_kwargs(len(prompts)),
        )
        kv_all = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self.b.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        return kv_all, mask, [len(p) for p in prompts], out.logits[:, -1, :]

    def _adapter_kwargs(self, rows: int) -> dict[str, Any]:
        if not self.b.adapters:
            return {}
        return {"adapter_names": [self.queries[0].request.adapter or "__base__"] * rows}

    # ---- the walk ------------------------------------------------------------------------------------------------
    def run(self) -> list[AnswerDistribution]:
        kv, mask, lengths, first = self._prompts()
        nodes = [_Node(q, [], 0.0, self._matcher(q)) for q in range(len(self.queries))]
        logits = first
        depth = 0
        while nodes:
            nodes = self._expand(nodes, logits, depth)
            depth += 1
            if nodes:
                logits = self._forward(nodes, kv, mask, lengths)
        return [
            AnswerDistribution(answers=dict(w.answers), unexplored=max(0.0, w.unexplored), nodes=w.nodes)
            for w in self.walks
        ]

    def _matcher(self, q: int) -> Any | None:
        matcher = self.b.matcher(self.queries[q].request)
        if matcher is None:
            return None
        for token in self.queries[q].prefix_ids:
            if not matcher.accept_token(int(token)):
                raise ValueError(f"prefix token {token} breaks the request's grammar")
        return matcher

    @torch.inference_mode()
    def _forward(self, nodes: list[_Node], kv: KV, mask: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Last-position logits (N, V) of every node: its newest answer token on top of its prompt's keys/values
        and those of its earlier answer tokens (kept from its parent's pass in ``self._path_kv``)."""
        config = self.b.model.config.get_text_config(decoder=True)
        d = len(nodes[0].path)  # every live node of one depth has as many answer tokens
        logits: list[torch.Tensor] = []
        path_kv: list[KV] = []
        device = self.b.device
        for start in range(0, len(nodes), self.rows):
            chunk = nodes[start : start + self.rows]
            index = torch.tensor([n.query for n in chunk], device=device)
            layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in kv]
            if d > 1:  # the answer tokens before the newest one, from the parent's pass
                parents = torch.tensor([n.parent for n in chunk], device=device)
                layers = [
                    (
                        torch.cat([k, pk.index_select(0, parents)], dim=2),
                        torch.cat([v, pv.index_select(0, parents)], dim=2),
                    )
                    for (k, v), (pk, pv) in zip(layers, self._path_kv, strict=True)
                ]
            cache = DynamicCache(ddp_cache_data=layers, config=config)
            ids = torch.tensor([[n.path[-1]] for n in chunk], device=device)
            att = torch.cat(
                [mask.to(device).index_select(0, index), torch.ones(len(chunk), d, dtype=torch.long, device=device)],
                dim=1,
            )
            pos = torch.tensor([[lengths[n.query] + d - 1] for n in chunk], device=device)
            kwargs: dict[str, Any] = {"logits_to_keep": 1} if self.b._logits_to_keep else {}
            res = self.b.model(
                input_ids=ids,
                attention_mask=att,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                **kwargs,
                **self._adapter_kwargs(len(chunk)),
            )
            width = mask.shape[1]
            # Keep only the answer tokens' keys/values (a few per node); the prompt's are shared by every node.
            path_kv.append(
                [
                    (layer.keys[:, :, width:].clone(), layer.values[:, :, width:].clone())
                    for layer in res.past_key_values.layers
                ]
            )
            logits.append(res.logits[:, -1, :])
        self._path_kv = [
            (torch.cat([c[i][0] for c in path_kv]), torch.cat([c[i][1] for c in path_kv])) for i in range(len(kv))
        ]
        self.b.stats["answer_search_rows"] += len(nodes)
        return torch.cat(logits, dim=0)

    def _expand(self, nodes: list[_Node], logits: torch.Tensor, depth: int) -> list[_Node]:
        """Score each node's children; finished answers go to their walk, the rest is the next depth's nodes."""
        logits = logits.float().clone()
        grammared = [i for i, n in enumerate(nodes) if n.matcher is not None]
        if grammared:
            import xgrammar as xgr

            bitmask = xgr.allocate_token_bitmask(len(nodes), self.vocab)
            for i in grammared:
                nodes[i].matcher.fill_next_token_bitmask(bitmask, i)  # type: ignore[union-attr]
            cpu = logits.cpu()
            self.b._bitmask_apply(cpu, bitmask, self.vocab, grammared)
            logits = cpu
        children: list[_Node] = []
        for i, node in enumerate(nodes):
            request = self.queries[node.query].request
            walk = self.walks[node.query]
            walk.nodes += 1
            logp = _next_logprobs(logits[i : i + 1], request.temperature, request.top_p)[0]
            finite = torch.isfinite(logp)
            tokens = finite.nonzero().squeeze(1)
            path_lp = node.logprob + logp[tokens].double()
            keep = path_lp >= self.min_logprob
            walk.unexplored += float(path_lp[~keep].exp().sum())
            last = depth + 1 >= request.max_new_tokens - len(self.queries[node.query].prefix_ids)
            for token, lp in zip(tokens[keep].tolist(), path_lp[keep].tolist(), strict=True):
                matcher = node.matcher.fork() if node.matcher is not None else None
                if matcher is not None:
                    matcher.accept_token(int(token))
                path = [*node.path, int(token)]
                ended = token == self.eos or (matcher is not None and matcher.is_terminated())
                if ended or last:  # a stop token, or the budget ``generate`` stops at
                    text = self.b.tokenizer.decode(
                        list(self.queries[node.query].prefix_ids) + path, skip_special_tokens=True
                    )
                    walk.answers[text] += math.exp(lp)
                else:
                    children.append(_Node(node.query, path, lp, matcher, parent=i))
        return self._cap(children)

    def _cap(self, children: list[_Node]) -> list[_Node]:
        """Keep each query's ``max_nodes`` most probable live paths; the others' mass is unexplored."""
        by_query: dict[int, list[_Node]] = defaultdict(list)
        for c in children:
            by_query[c.query].append(c)
        kept: list[_Node] = []
        for q, group in by_query.items():
            group.sort(key=lambda c: c.logprob, reverse=True)
            kept += group[: self.max_nodes]
            self.walks[q].unexplored += sum(math.exp(c.logprob) for c in group[self.max_nodes :])
        return kept


def answer_distribution(
    backend: TransformersBackend,
    queries: Sequence[AnswerQuery],
    min_prob: float = 1e-6,
    max_nodes: int = 2048,
) -> list[AnswerDistribution]:
    """Every answer of each query with its probability (see the module docs); queries are grouped by adapter."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        groups[q.request.adapter].append(i)
    results: list[AnswerDistribution | None] = [None] * len(queries)
    rows = max(1, backend.max_batch_size)
    for idx in groups.values():
        for start in range(0, len(idx), rows):
            chunk = idx[start : start + rows]
            search = AnswerSearch(backend, [queries[i] for i in chunk], min_prob, max_nodes, rows)
            with torch.inference_mode():
                for i, dist in zip(chunk, search.run(), strict=True):
                    results[i] = dist
    return [r for r in results if r is not None]
