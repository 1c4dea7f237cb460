"""Grounded decoding, what the decoders (:mod:`palr.plugins.llama_lora.decoders`) build on.

Every item is written as the same token block in training labels and at decoding time (its
quoted rendering and a comma, tokenized on its own), so a trie over the candidates' blocks
describes exactly the outputs that name a candidate. ``generate`` lets the model write items
under that trie (an item leaves the trie once written: no repeats); ``score`` reads each
candidate's mean token log-likelihood, all users of a batch and all their candidates in one
forward pass (:func:`packed_block_scores`); ``verbalizer`` reads the next-token distribution over
the candidates' labels (``A``, ``B``, ...) after a prompt that lists them (:func:`choice_scores`).
:func:`fuse_with_retriever` and :func:`order_by_scores` live in :mod:`~palr.plugins.llama_lora.fusion`
and are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from palr_core import ItemCatalog
from palr_core.kit.llm import chat_prompt_ids

from .fusion import fuse_with_retriever, order_by_scores
from .prompts import render_item

__all__ = ["ItemCoder", "CandidateTrie", "generate_rankings", "score_candidates", "packed_block_scores",
           "choice_scores", "score_rankings", "fuse_with_retriever", "order_by_scores", "body_and_head"]


#: positions whose vocabulary-wide log-probabilities :func:`packed_block_scores` holds at once
#: (16 users x 20 candidates x 12 tokens in float32 would be 1.5 GB in one piece)
READ_CHUNK = 256


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


def _round_up(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def _left_pad(rows: list[list[int]], pad_id: int, device, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    width = _round_up(max(len(r) for r in rows), multiple)
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


def body_and_head(model):
    """The transformer body (hidden states) and the LM head of a causal LM, a peft wrapper looked
    through: so that logits are computed only at the positions that are read."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


@torch.no_grad()
def score_candidates(model, coder: ItemCoder, prompt: list[int], candidates: Sequence[int],
                     batch_size: int = 64) -> list[float]:
    """The mean log-likelihood of each candidate's block right after the prompt (one user)."""
    scores: list[float] = []
    for start in range(0, len(candidates), batch_size):
        chunk = [list(coder.block(int(c))) for c in candidates[start:start + batch_size]]
        scores += packed_block_scores(model, [prompt], [chunk], coder.tokenizer.pad_token_id)[0]
    return scores


@torch.no_grad()
def packed_block_scores(model, prompts: list[list[int]], blocks: list[list[list[int]]], pad_id: int,
                        multiple: int = 1) -> list[list[float]]:
    """For each prompt, the mean token log-likelihood of each of its blocks written right after it.

    One forward pass for all users: row ``u`` holds prompt ``u`` followed by all of its blocks,
    and a 4-D attention mask lets each block see the prompt and itself only, at the positions it
    would have right after the prompt. The prompt is encoded once per user (no key/value cache
    copied per candidate), and the LM head runs only where a block token is predicted. Rows are
    padded to a ``multiple`` of tokens (fewer distinct shapes for a CPU's kernel caches).
    """
    rows, spans = [], []
    for prompt, user_blocks in zip(prompts, blocks):
        row, user_spans = list(prompt), []
        for block in user_blocks:
            user_spans.append((len(row), len(block)))
            row += block
        rows.append(row)
        spans.append(user_spans)
    width = _round_up(max(len(r) for r in rows), multiple)
    device = model.device
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.zeros((len(rows), width, width), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for u, (row, prompt) in enumerate(zip(rows, prompts)):
        n = len(prompt)
        ids[u, :len(row)] = torch.tensor(row)
        positions[u, :n] = torch.arange(n)
        allowed[u, :n, :n] = causal[:n, :n]
        for start, length in spans[u]:
            stop = start + length
            positions[u, start:stop] = torch.arange(n, n + length)
            allowed[u, start:stop, :n] = True
            allowed[u, start:stop, start:stop] = causal[:length, :length]
        allowed[u, len(row):, 0] = True  # padding rows attend somewhere (their output is never read)
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
    body, head = body_and_head(model)
    hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                  use_cache=False).last_hidden_state
    # block token j is predicted at the position before it: the prompt's last token for j = 0
    read, tokens, owner = [], [], []
    for u, (row, prompt) in enumerate(zip(rows, prompts)):
        for k, (start, length) in enumerate(spans[u]):
            before = [len(prompt) - 1] + list(range(start, start + length - 1))
            read += [(u, p) for p in before]
            tokens += row[start:start + length]
            owner += [(u, k)] * length
    index = torch.tensor(read, dtype=torch.long, device=device)
    wanted = torch.tensor(tokens, device=device)[:, None]
    token_logp = torch.cat([  # a vocabulary-wide row per read position, a few hundred rows at a time
        head(hidden[index[rows, 0], index[rows, 1]]).float().log_softmax(-1).gather(1, wanted[rows]).squeeze(1)
        for rows in torch.arange(len(read), device=device).split(READ_CHUNK)]).cpu()
    sums = [[0.0] * len(s) for s in spans]
    for (u, k), value in zip(owner, token_logp.tolist()):
        sums[u][k] += value
    return [[total / length for total, (_, length) in zip(user_sums, user_spans)]
            for user_sums, user_spans in zip(sums, spans)]


@torch.no_grad()
def choice_scores(model, prompts: list[list[int]], choices: list[list[int]], pad_id: int,
                  multiple: int = 1) -> list[list[float]]:
    """The verbalizer: for each prompt, the log-probability of each choice token (a candidate's
    label, ``A``, ``B``, ...) as the next token, normalised over that prompt's choices. One forward
    pass for all prompts (left-padded to a ``multiple`` of tokens), the LM head on each prompt's last
    position only."""
    ids, mask = _left_pad(prompts, pad_id, model.device, multiple)
    body, head = body_and_head(model)
    hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, -1]
    logits = head(hidden).float()
    return [logits[u, torch.tensor(c, device=logits.device)].log_softmax(-1).tolist() for u, c in enumerate(choices)]


def score_rankings(model, coder: ItemCoder, prompt: list[int], candidates: Sequence[int],
                   batch_size: int = 64, retriever_weight: float = 0.0) -> list[int]:
    """Candidates ordered by :func:`score_candidates`, fused with their retriever rank by ``retriever_weight``."""
    return order_by_scores(candidates, score_candidates(model, coder, prompt, candidates, batch_size), retriever_weight)
