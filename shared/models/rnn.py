"""The DARTS recurrent language model built from a genotype (DARTS ``rnn/model.py``).

Cell, per time step, with x_t the input and h the previous hidden state:
[c0 | h0] = [x * m_x, h * m_h] W0, s0 = h + sigmoid(c0) * (tanh(h0) - h); then node i takes
its genotype predecessor s_j: [c | h'] = (s_j * m_h) W_i, s_i = s_j + sigmoid(c) * (f(h') - s_j).
The output (the next hidden state) is the mean of the ``concat`` nodes. m_x and m_h are
variational dropout masks, one per sequence (not per step), in training only.

Model: word embedding (dropout of whole words, ``dropoute``) -> locked dropout (``dropouti``)
-> ``nlayers`` DARTS cell layers (1, as DARTS) -> locked dropout (``dropout``) -> decoder tied
to the embedding -> log-softmax. ``forward(..., return_h=True)`` also returns the raw and
dropped-out outputs that the AR / TAR regularisers read. Weights are initialised
U(-0.04, 0.04), the decoder bias 0.

Data parallelism (``batch_shard``, set by ``shard_batches``; the recurrent search under
``torchrun``, ``shared.search.data_parallel``): each process runs a slice of the batch's
columns, and every dropout mask that has one row per sequence is drawn at the global batch
size from the (identical) generator of every rank and sliced, so the shards together drop
exactly what one process with the whole batch drops, and every rank's generator stays in step.

Stacked layers (Λ-DARTS' RNN search stacks 2, Lambda-DARTS ``sota/rnn/model.py``): layer l+1
reads layer l's raw output (the released code draws an output-dropout mask per layer but
feeds the next layer the undropped output and discards that mask, so no dropout is put between
layers here; each cell still drops its own input with ``dropoutx``); the model's output is the
last layer's, output-dropped. Each layer carries its own hidden state (``init_hidden`` gives
one per layer; the released code started both layers from the first layer's state).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.data.on_device import ONE_PROCESS, Shard
from shared.rnn_genotype import RNNGenotype

INIT_RANGE = 0.04

ACTIVATION: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def dropout_mask(x: torch.Tensor, shape: Sequence[int], p: float,
                 shard: Shard = ONE_PROCESS, batch_dim: int = 0) -> torch.Tensor:
    """A Bernoulli(1 - p) mask, rescaled by 1 / (1 - p) (inverted dropout). With a ``shard``
    of several processes, ``shape[batch_dim]`` is this process's part of the batch: the mask
    of the global batch is drawn and this part of it returned."""
    keep = 1.0 - p
    if shard.world_size == 1:
        return x.new_empty(shape).bernoulli_(keep).div_(keep)
    full = list(shape)
    full[batch_dim] *= shard.world_size
    start, stop = shard.rows(full[batch_dim])
    return x.new_empty(full).bernoulli_(keep).div_(keep).narrow(batch_dim, start, stop - start)


class LockedDropout(nn.Module):
    """The same dropout mask at every time step of a (T, B, D) sequence."""

    def forward(self, x: torch.Tensor, p: float, shard: Shard = ONE_PROCESS) -> torch.Tensor:
        if not self.training or p == 0:
            return x
        return x * dropout_mask(x, (1, x.size(1), x.size(2)), p, shard, batch_dim=1)


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float) -> torch.Tensor:
    """Drop whole words (rows of the embedding matrix), rescaled, as AWD-LSTM / DARTS."""
    weight = embed.weight
    if p:
        weight = weight * dropout_mask(weight, (weight.size(0), 1), p)
    return F.embedding(words, weight, embed.padding_idx)


class DARTSCell(nn.Module):
    """A recurrent cell from a genotype; runs a whole (T, B, ninp) sequence."""

    batch_shard: Shard = ONE_PROCESS  # this process's columns of the batch (``shard_batches``)

    def __init__(self, ninp: int, nhid: int, dropouth: float, dropoutx: float,
                 genotype: RNNGenotype | None, steps: int | None = None) -> None:
        super().__init__()
        self.nhid, self.dropouth, self.dropoutx = nhid, dropouth, dropoutx
        self.genotype = genotype
        steps = genotype.steps if genotype is not None else steps
        self._W0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INIT_RANGE,
                                                                              INIT_RANGE))
        self._Ws = nn.ParameterList(
            nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
            for _ in range(steps))

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor, **kw
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (T, B, ninp), hidden (1, B, nhid) -> all hidden states (T, B, nhid) and the
        last one (1, B, nhid)."""
        batch = inputs.size(1)
        x_mask = h_mask = None
        if self.training:  # variational: one mask per sequence
            x_mask = dropout_mask(inputs, (batch, inputs.size(2)), self.dropoutx,
                                  self.batch_shard)
            h_mask = dropout_mask(inputs, (batch, self.nhid), self.dropouth, self.batch_shard)
        h = hidden[0]
        outputs = []
        for x in inputs:
            h = self.cell(x, h, x_mask, h_mask, **kw)
            outputs.append(h)
        stacked = torch.stack(outputs)
        return stacked, stacked[-1].unsqueeze(0)

    def initial_state(self, x: torch.Tensor, h_prev: torch.Tensor,
                      x_mask: torch.Tensor | None, h_mask: torch.Tensor | None) -> torch.Tensor:
        if x_mask is not None:
            xh = torch.cat([x * x_mask, h_prev * h_mask], dim=-1)
        else:
            xh = torch.cat([x, h_prev], dim=-1)
        c0, h0 = torch.split(xh.mm(self._W0), self.nhid, dim=-1)
        return h_prev + c0.sigmoid() * (h0.tanh() - h_prev)

    def cell(self, x: torch.Tensor, h_prev: torch.Tensor, x_mask: torch.Tensor | None,
             h_mask: torch.Tensor | None) -> torch.Tensor:
        states = [self.initial_state(x, h_prev, x_mask, h_mask)]
        for i, (name, pred) in enumerate(self.genotype.recurrent):
            s_prev = states[pred]
            inp = s_prev * h_mask if h_mask is not None else s_prev
            c, h = torch.split(inp.mm(self._Ws[i]), self.nhid, dim=-1)
            states.append(s_prev + c.sigmoid() * (ACTIVATION[name](h) - s_prev))
        return torch.stack([states[i] for i in self.genotype.concat], dim=-1).mean(dim=-1)


class RNNModel(nn.Module):
    """The DARTS PTB language model (ninp = nhid = nhidlast; ``nlayers`` stacked cells, 1 as
    DARTS, 2 in Λ-DARTS' search)."""

    cell_class = DARTSCell
    batch_shard: Shard = ONE_PROCESS

    def __init__(self, ntoken: int, ninp: int, nhid: int, nhidlast: int, dropout: float = 0.5,
                 dropouth: float = 0.5, dropoutx: float = 0.5, dropouti: float = 0.5,
                 dropoute: float = 0.1, genotype: RNNGenotype | None = None,
                 steps: int | None = None, nlayers: int = 1) -> None:
        super().__init__()
        if not ninp == nhid == nhidlast:
            raise ValueError(f"the DARTS cell needs emsize = nhid = nhidlast, got {ninp}, "
                             f"{nhid}, {nhidlast}")
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}")
        self.ntoken, self.ninp, self.nhid, self.nhidlast = ntoken, ninp, nhid, nhidlast
        self.dropout, self.dropouti, self.dropoute = dropout, dropouti, dropoute
        self.lockdrop = LockedDropout()
        self.encoder = nn.Embedding(ntoken, ninp)
        # ninp = nhid, so every layer takes the same sizes; built in order, so one layer draws
        # exactly the initial weights the one-layer model always drew
        self.rnns = nn.ModuleList(self.cell_class(ninp, nhid, dropouth, dropoutx, genotype,
                                                  steps) for _ in range(nlayers))
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight  # tied
        self.encoder.weight.data.uniform_(-INIT_RANGE, INIT_RANGE)
        self.decoder.bias.data.zero_()

    def shard_batches(self, shard: Shard) -> None:
        """Run as ``shard`` of a data-parallel batch: its columns, the global batch's masks."""
        self.batch_shard = shard
        for rnn in self.rnns:
            rnn.batch_shard = shard

    def init_hidden(self, bsz: int) -> list[torch.Tensor]:
        """One zero state (1, bsz, nhid) per layer."""
        weight = self.encoder.weight
        return [weight.new_zeros(1, bsz, self.nhid) for _ in self.rnns]

    def forward(self, input: torch.Tensor, hidden: Sequence[torch.Tensor],
                return_h: bool = False, layer_weights: Sequence[torch.Tensor] | None = None):
        """input (T, B) word ids -> log-probabilities (T, B, ntoken) and the new hidden
        state (one per layer); with ``return_h`` also every layer's raw output and the
        dropped-out model output (AR / TAR read the last of each). ``hidden``: one state per
        layer. ``layer_weights``: the mixing weights of each layer's cell (the search model
        only)."""
        if len(hidden) != len(self.rnns):
            raise ValueError(f"{len(hidden)} hidden state(s) for {len(self.rnns)} layer(s): "
                             "use init_hidden")
        emb = embedded_dropout(self.encoder, input, self.dropoute if self.training else 0)
        raw_output = self.lockdrop(emb, self.dropouti, self.batch_shard)
        new_hidden, raw_outputs = [], []
        for layer, rnn in enumerate(self.rnns):
            kw = {} if layer_weights is None else {"weights": layer_weights[layer]}
            raw_output, new_h = rnn(raw_output, hidden[layer], **kw)
            new_hidden.append(new_h)
            raw_outputs.append(raw_output)
        output = self.lockdrop(raw_output, self.dropout, self.batch_shard)
        log_prob = F.log_softmax(self.decoder(output.view(-1, self.ninp)), dim=-1)
        model_output = log_prob.view(input.size(0), input.size(1), self.ntoken)
        if return_h:
            return model_output, new_hidden, raw_outputs, [output]
        return model_output, new_hidden


def repackage_hidden(h):
    """Detach hidden states from their history (truncated BPTT)."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return [repackage_hidden(v) for v in h]
