"""Grounded decoding: items as fixed token blocks, a prefix trie over candidates, and two decoders.

Every item is written as the same token block in training labels and at decoding time (its
quoted rendering and a comma, tokenized on its own), so a trie over the candidates' blocks
describes exactly the outputs that name a candidate. ``generate`` lets the model write items
under that trie (an item leaves the trie once written: no repeats); ``score`` reads each
candidate's mean token log-likelihood from one batched forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from palr_core import ItemCatalog
from palr_core.kit.llm import chat_prompt_ids
from palr_core.kit.prompts import render_item

__all__ = ["ItemCoder", "CandidateTrie", "generate_rankings", "score_candidates", "score_rankings", "fuse_with_retriever",
           "order_by_scores"]


class ItemCoder:
    """Token blocks of items, cached: ``block(i)`` is how item ``i`` appears in any output."""

    def __init__(self, tokenizer, catalog: ItemCatalog) -> None:
        self.tokenizer = tokenizer
        self.catalog = catalog
        self._blocks: dict[int, tuple[int, ...]] = {}

    def block(self, item: int) -> tuple[int, ...]:
        item = int(item)
        if item not in self._blocks:
            text = render_item(self.catalog, item) + ","
            self._blocks[item] = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._blocks[item]

    def label(self, items: Sequence[int]) -> list[int]:
        """The output for ``items``: their blocks in order, then end-of-sequence."""
        return [t for i in items for t in self.block(i)] + [self.tokenizer.eos_token_id]

    def prompt(self, text: str, max_length: int) -> list[int]:
        """Prompt token ids in the model's chat template if it has one (else with BOS if the
        tokenizer adds one); a too-long prompt loses its oldest text, never the template."""
        return chat_prompt_ids(self.tokenizer, text, max_length)


class CandidateTrie:
    """Prefix trie of candidate token blocks; tracks which items were already written."""

    def __init__(self, coder: ItemCoder, candidates: Sequence[int], eos_id: int, limit: int) -> None:
        self.root: dict = {}
        self.eos_id = eos_id
        self.limit = min(limit, len(candidates))
        self.under: dict[int, set[int]] = {}  # id(node) -> items whose block passes through it
        self.end: dict[int, int] = {}  # id(node) -> item whose block ends there
        for item in dict.fromkeys(int(c) for c in candidates):
            node = self.root
            self.under.setdefault(id(node), set()).add(item)
            for token in coder.block(item):
                node = node.setdefault(token, {})
                self.under.setdefault(id(node), set()).add(item)
            self.end[id(node)] = item

    def parse(self, tokens: Sequence[int]) -> tuple[list[int], dict | None]:
        """Items completed by ``tokens`` and the node reached (``None`` once EOS was written)."""
        items: list[int] = []
        node = self.root
        for token in tokens:
            if token == self.eos_id or token not in node:
                return items, None
            node = node[token]
            if id(node) in self.end and not node:
                items.append(self.end[id(node)])
                node = self.root
        return items, node

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """Next tokens that keep the output a list of distinct candidates (EOS when done)."""
        written, node = self.parse(tokens)
        if node is None or len(written) >= self.limit:
            return [self.eos_id]
        used = set(written)
        options = [t for t, child in node.items() if self.under[id(child)] - used]
        return options or [self.eos_id]


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[k, width - len(row):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate_rankings(model, coder: ItemCoder, prompts: list[list[int]],
                      candidates: list[Sequence[int]], limit: int, num_beams: int = 1) -> list[list[int]]:
    """Trie-constrained greedy (or beam) generation of up to ``limit`` distinct candidates per prompt."""
    tok = coder.tokenizer
    tries = [CandidateTrie(coder, c, tok.eos_token_id, limit) for c in candidates]
    ids, mask = _left_pad(prompts, tok.pad_token_id, model.device)
    width = ids.shape[1]
    longest = max((len(coder.block(i)) for c in candidates for i in c), default=1)

    def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
        return tries[batch_id].allowed(input_ids[width:].tolist())

    out = model.generate(
        input_ids=ids, attention_mask=mask, prefix_allowed_tokens_fn=allowed,
        max_new_tokens=limit * longest + 1, do_sample=False, num_beams=num_beams,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    return [trie.parse(row[width:].tolist())[0] for trie, row in zip(tries, out)]


@torch.no_grad()
def score_candidates(model, coder: ItemCoder, prompt: list[int], candidates: Sequence[int],
                     batch_size: int = 64) -> list[float]:
    """The mean log-likelihood of each candidate's block right after the prompt.

    The prompt is encoded once; its key/value cache is repeated for a batch of candidate blocks,
    so each batch is a single forward pass over the blocks' tokens only.
    """
    prompt_ids = torch.tensor([prompt], device=model.device)
    first = model(input_ids=prompt_ids, use_cache=True)
    first_logp = first.logits[0, -1].float().log_softmax(-1)
    scores: list[float] = []
    for start in range(0, len(candidates), batch_size):
        chunk = [list(coder.block(int(c))) for c in candidates[start:start + batch_size]]
        scores += _block_scores(model, first.past_key_values, first_logp, len(prompt), chunk,
                                coder.tokenizer.pad_token_id)
    return scores


def fuse_with_retriever(scores: Sequence[float], weight: float) -> list[float]:
    """Add ``weight * -log(1 + rank)`` of each candidate's retriever rank (candidates arrive best first).

    ``weight=0`` ranks by the model alone; a large weight keeps the retriever's order and lets the
    model break near-ties. Rank-based, so it needs no calibration between the two score scales.
    """
    return [s - weight * math.log1p(rank) for rank, s in enumerate(scores)]


def order_by_scores(candidates: Sequence[int], scores: Sequence[float], retriever_weight: float = 0.0) -> list[int]:
    """``candidates`` (best first by the retriever) ordered by their model ``scores`` fused with
    their retriever rank (:func:`fuse_with_retriever`)."""
    fused = fuse_with_retriever(scores, retriever_weight)
    return [int(candidates[k]) for k in sorted(range(len(candidates)), key=lambda k: -fused[k])]


def score_rankings(model, coder: ItemCoder, prompt: list[int], candidates: Sequence[int],
                   batch_size: int = 64, retriever_weight: float = 0.0) -> list[int]:
    """Candidates ordered by :func:`score_candidates`, fused with their retriever rank by ``retriever_weight``."""
    return order_by_scores(candidates, score_candidates(model, coder, prompt, candidates, batch_size), retriever_weight)


def _block_scores(model, cache, first_logp, prompt_len: int, blocks: list[list[int]], pad_id: int) -> list[float]:
    import copy

    width = max(len(b) for b in blocks)
    ids = torch.full((len(blocks), width), pad_id, dtype=torch.long, device=first_logp.device)
    mask = torch.zeros((len(blocks), prompt_len + width), dtype=torch.long, device=first_logp.device)
    mask[:, :prompt_len] = 1
    for k, block in enumerate(blocks):
        ids[k, :len(block)] = torch.tensor(block)
        mask[k, prompt_len:prompt_len + len(block)] = 1
    batch_cache = copy.deepcopy(cache)
    batch_cache.batch_repeat_interleave(len(blocks))
    positions = torch.arange(prompt_len, prompt_len + width, device=ids.device).expand(len(blocks), -1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   past_key_values=batch_cache, use_cache=True).logits.float()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    logp = torch.cat([first_logp[ids[:, 0]].unsqueeze(1), logp], dim=1)
    return [logp[k, :len(b)].mean().item() for k, b in enumerate(blocks)]
