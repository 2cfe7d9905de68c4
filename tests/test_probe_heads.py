import re

import numpy as np
import pytest
import torch

from picojepa.cli import PROBE_GRID_HELP
from picojepa.errors import ConfigError
from picojepa.probe.classifier import PROBE_GRID, ProbeConfig, head_probabilities, head_seed, train_head
from picojepa.probe.features import Features
from picojepa.probe.heads import AttentiveHead, HeadEnsemble, make_head


def test_attentive_head_equals_multihead_attention_in_values_and_gradients():
    # float64: the two orders of computation are equal algebraically; in float32 their rounding differs by
    # CPU (gradients of size ~20 differed by 5e-5 on one Xeon), which says nothing about the algebra.
    torch.manual_seed(0)
    head = AttentiveHead(48, 5).double()
    with torch.no_grad():  # move every parameter off its init, biases included, so none of them is skipped
        for p in head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randn(6, 20, 48, dtype=torch.float64)
    ours, ref = head(tokens), head.forward_unfolded(tokens)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    grads = []
    for out in (ours, ref):
        head.zero_grad()
        (out * torch.arange(5.0, dtype=torch.float64)).sum().backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in head.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-9, msg=name)


def test_head_ensemble_gives_the_mean_of_its_members_probabilities():
    torch.manual_seed(0)
    members = [make_head("attentive", 16, 3) for _ in range(3)]
    ensemble = HeadEnsemble(members)
    tokens = torch.randn(4, 8, 16)
    expected = torch.stack([m(tokens).softmax(-1) for m in members]).mean(0)
    torch.testing.assert_close(ensemble(tokens).softmax(-1), expected)


def _separable_features(n_per_class: int = 12, clips: int = 2, tokens: int = 6, dim: int = 16):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), n_per_class)
    x = rng.normal(size=(len(labels), clips, tokens, dim)).astype(np.float32)
    x[:, :, 0, :3] += 3 * np.eye(3, dtype=np.float32)[labels][:, None]  # the class sits in one token
    feats = Features(x.mean(axis=2), x, np.ones(len(labels), dtype=bool))
    order = rng.permutation(len(labels))
    return feats, labels, order[:18], order[18:27], order[27:]


def test_grid_trains_one_head_per_setting_each_with_its_own_epoch():
    feats, labels, tr, va, te = _separable_features()
    grid = ((3e-4, 0.05), (3e-3, 0.5))
    cfg = ProbeConfig(head="attentive", epochs=6, num_clips=2, grid=grid)
    trained = train_head(feats, labels, tr, va, 3, cfg)
    assert isinstance(trained.head, HeadEnsemble) and len(trained.head.members) == 2
    assert [(h["lr"], h["weight_decay"]) for h in trained.history] == list(grid)
    assert trained.member_epochs == [h["best_epoch"] for h in trained.history]
    # each member is what a single head at its setting and seed gives; the first keeps the probe's seed
    assert [h["seed"] for h in trained.history] == [0, head_seed(0, 1)]
    for (lr, wd), member, h in zip(grid, trained.head.members, trained.history, strict=True):
        single = train_head(feats, labels, tr, va, 3, ProbeConfig(head="attentive", epochs=6, num_clips=2, lr=lr,
                                                                 weight_decay=wd, grid=(), seed=h["seed"]))
        for a, b in zip(member.state_dict().values(), single.head.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b)
    probs = head_probabilities(trained.head, feats, te, "attentive", 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_heads_of_an_ensemble_never_share_an_initialisation():
    feats, labels, tr, va, _ = _separable_features()
    # the same setting twice, and every setting twice over with inits=2: no two members start alike
    for cfg in (ProbeConfig(head="attentive", epochs=1, num_clips=2, grid=((1e-3, 0.05), (1e-3, 0.05))),
                ProbeConfig(head="attentive", epochs=1, num_clips=2, grid=((1e-3, 0.05), (3e-4, 0.5)), inits=2)):
        trained = train_head(feats, labels, tr, va, 3, cfg)
        assert len(trained.head.members) == len(cfg.grid) * cfg.inits
        assert [(h["lr"], h["weight_decay"]) for h in trained.history] == list(cfg.grid) * cfg.inits
        assert len({h["seed"] for h in trained.history}) == len(trained.history)
        weights = [m.query.detach().flatten() for m in trained.head.members]
        for i in range(len(weights)):
            for j in range(i):
                assert not torch.allclose(weights[i], weights[j])
    with pytest.raises(ConfigError):
        ProbeConfig(inits=0)


def test_linear_heads_form_an_ensemble_too():
    feats, labels, tr, va, te = _separable_features()
    trained = train_head(feats, labels, tr, va, 3, ProbeConfig(head="linear", epochs=30, num_clips=2))
    assert len(trained.head.members) == len(ProbeConfig().grid)
    assert (head_probabilities(trained.head, feats, te, "linear", 2).argmax(1) == labels[te]).mean() > 0.5


def test_grid_rejects_bad_values():
    with pytest.raises(ConfigError):
        ProbeConfig(grid=((0.0, 0.05),))
    with pytest.raises(ConfigError):
        ProbeConfig(grid=((1e-3, -1.0),))


def test_the_cli_describes_the_grid_it_uses():
    lrs = sorted({lr for lr, _ in PROBE_GRID})
    wds = sorted({wd for _, wd in PROBE_GRID})
    assert len(PROBE_GRID) == len(lrs) * len(wds)  # a full grid, as the words say
    said_lrs, said_wds = PROBE_GRID_HELP.split(" × ")
    assert [float(x) for x in re.findall(r"[\d.]+(?:e-?\d+)?", said_lrs)] == lrs
    assert [float(x) for x in re.findall(r"[\d.]+(?:e-?\d+)?", said_wds)] == wds


def test_heads_train_on_one_cpu_thread_and_the_setting_is_restored(monkeypatch):
    import picojepa.probe.classifier as classifier

    seen = []
    original = classifier._train_one

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(classifier, "_train_one", spy)
    feats, labels, tr, va, _ = _separable_features()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_head(feats, labels, tr, va, 3, ProbeConfig(head="attentive", epochs=1, num_clips=2, grid=()))
        assert seen == [1]  # spin-waiting threads on a busy machine cost 10-30x (bench/speed/probe_head.py)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
