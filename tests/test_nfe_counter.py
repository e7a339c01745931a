"""NFE counting (README: "NFE counts exact"): rows through each hooked network per image, whatever the calling
convention, so a doubled classifier-free-guidance batch counts 2 and a batch of one image counts its steps."""

from __future__ import annotations

import torch

from bench.metrics.nfe import NFECounter


class _Net(torch.nn.Module):
    def forward(self, x: torch.Tensor | None = None, t: torch.Tensor | None = None, *, sample=None,
                timestep=None) -> torch.Tensor:
        return x if x is not None else sample


def test_rows_are_counted_per_image_across_calls_and_networks():
    a, b = _Net(), _Net()
    with NFECounter([a, None, b]) as c:  # an absent network (None) is skipped, not an error
        for _ in range(3):
            a(torch.zeros(4, 2), torch.zeros(4))  # 3 steps on a batch of 4
        b(torch.zeros(8, 2))  # one CFG call: the batch doubled
    assert (c.calls, c.rows) == (4, 20)
    assert c.per_image(4) == 5.0  # 3 steps + 2 rows per image of the doubled call
    assert c.per_image(0) == 0.0


def test_keyword_only_calls_count_their_first_tensor():
    net = _Net()
    with NFECounter([net]) as c:
        net(sample=torch.zeros(6, 3), timestep=torch.tensor(0.5))  # diffusers UNets are called like this
        net(x=torch.zeros(2, 3))
    assert (c.calls, c.rows) == (2, 8)


def test_a_call_without_a_batch_dimension_counts_one():
    net = _Net()
    with NFECounter([net]) as c:
        net(torch.tensor(1.0))  # a 0-d input: one evaluation
        net(timestep=3)  # no tensor at all
    assert (c.calls, c.rows) == (2, 2)
    assert c.per_image(1) == 2.0


def test_nothing_is_counted_outside_the_block_and_counters_start_at_zero():
    net = _Net()
    net(torch.zeros(5, 1))
    with NFECounter([net]) as c:
        assert (c.calls, c.rows) == (0, 0)
        net(torch.zeros(1, 1))
    net(torch.zeros(7, 1))  # the hooks are gone
    assert (c.calls, c.rows) == (1, 1)
    assert not net._forward_pre_hooks
    with NFECounter([net]) as again:  # a second counter on the same network starts afresh
        net(torch.zeros(2, 1))
    assert again.rows == 2 and c.rows == 1
