"""Fusion heads (fer_utils.models.heads): shapes, the original heads reproduced exactly (flaws
included: their attention weight is always 1 and two of them ignore the caption), heads that learn
from the caption only when it is paired with its image, and late fusion."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fer_utils.errors import ConfigError
from fer_utils.models.heads.fusion import attention_weights, gate_values
from fer_utils.models.heads.late import LateFusion, temperature_scale
from fer_utils.models.heads.registry import create_head, describe_heads, head_info, input_dims, list_heads

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CNN_DIM, TEXT_DIM, N, C = 16, 8, 5, 7
ORIGINAL_ATTENTION = ("original_attention", "original_cross_attention", "original_self_attention")
BLIND_TO_TEXT = ("original_attention", "original_cross_attention")


def _x(n=N, seed=0, cnn_dim=CNN_DIM, text_dim=TEXT_DIM):
    return torch.randn(n, cnn_dim + text_dim, generator=torch.Generator().manual_seed(seed))


def _head(name, cnn_dim=CNN_DIM, text_dim=TEXT_DIM, seed=0, **kwargs):
    torch.manual_seed(seed)
    return create_head(name, cnn_dim=cnn_dim, text_dim=text_dim, num_classes=C, **kwargs).eval()


# ------------------------------------------------------------------------------------------------
# Registry and shapes
# ------------------------------------------------------------------------------------------------

def test_registry_has_the_study_heads():
    assert list_heads("original") == sorted([
        "mlp1", "mlp2", "mlp3", "mlp1_bn", "mlp2_bn", "mlp3_bn", "mlp1_leaky", "mlp2_leaky", "mlp3_leaky",
        "original_attention", "original_self_attention", "original_cross_attention"])
    assert list_heads("fusion") == ["gated", "token_attention"]
    assert list_heads() == sorted(list_heads("original") + list_heads("fusion"))
    for name in list_heads():
        info = head_info(name)
        assert info.name == name and info.description
        assert info.needs_both == (name in ORIGINAL_ATTENTION or info.family == "fusion")


def test_importing_the_registry_alone_registers_every_head():
    """The package's __init__ imports the heads' modules; the heads import nothing of the study."""
    code = ("import sys; from fer_utils.models.heads.registry import list_heads; "
            f"assert list_heads() == {list_heads()!r}, list_heads(); "
            "study = [m for m in sys.modules if m.startswith('fer_utils.study')]; assert not study, study")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("name", list_heads())
def test_fused_forward_shape(name):
    head = _head(name)
    assert (head.cnn_dim, head.text_dim) == (CNN_DIM, TEXT_DIM)
    with torch.no_grad():
        out = head(_x())
    assert out.shape == (N, C) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_heads())
def test_single_modality(name):
    for inputs in ("cnn", "text"):
        cnn_dim, text_dim = input_dims(inputs, CNN_DIM, TEXT_DIM)
        if head_info(name).needs_both:
            with pytest.raises(ConfigError, match=name):
                create_head(name, cnn_dim, text_dim)
            continue
        head = _head(name, cnn_dim, text_dim)
        assert (head.cnn_dim, head.text_dim) == (cnn_dim, text_dim)
        with torch.no_grad():
            assert head(_x(cnn_dim=cnn_dim, text_dim=text_dim)).shape == (N, C)


def test_errors_name_what_is_wrong():
    with pytest.raises(ConfigError, match="unknown fusion head 'nope'.*gated.*mlp1.*token_attention"):
        create_head("nope", CNN_DIM, TEXT_DIM)
    with pytest.raises(ConfigError, match="mlp1.*bad keyword"):
        create_head("mlp1", CNN_DIM, TEXT_DIM, attn_dim=3)
    with pytest.raises(ConfigError, match="both 0"):
        create_head("mlp1", 0, 0)
    with pytest.raises(ConfigError, match="num_classes"):
        create_head("mlp1", CNN_DIM, TEXT_DIM, num_classes=1)
    with pytest.raises(ConfigError, match="inputs"):
        input_dims("both", CNN_DIM, TEXT_DIM)
    with pytest.raises(ValueError, match=r"\[N, 24\]"):
        _head("mlp1")(torch.zeros(2, 23))
    assert input_dims("fused", 3, 4) == (3, 4)


def test_describe_heads():
    table = describe_heads(CNN_DIM, TEXT_DIM)
    assert list(table["name"]) == list_heads("original") + list_heads("fusion") + ["late"]
    assert {"name", "family", "description", "parameters"} <= set(table.columns)
    mlp1 = table.set_index("name").loc["mlp1"]
    assert mlp1["parameters"] == (CNN_DIM + TEXT_DIM) * 512 + 512 + 512 * C + C
    assert mlp1["cnn_only_parameters"] == CNN_DIM * 512 + 512 + 512 * C + C


# ------------------------------------------------------------------------------------------------
# The original heads, reproduced exactly: the original source, verbatim (the last definition of
# each class, except MLP_BN: the trained dropout-0.2 version, see fer_utils.models.heads.original.MLP_BN).
# The MLP classes repeat each other: that is the original's code, kept verbatim as the independent
# reference, not generated (a generated reference would share any mistake of the builder it checks).
# ------------------------------------------------------------------------------------------------

ORIGINAL_SOURCE = '''
class MLP(nn.Module):
    def __init__(self, input_dim=1792, hidden_dim=512, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden_dim, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_2Layer(nn.Module):
    def __init__(self, input_dim=1792, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_3Layer(nn.Module):
    def __init__(self, input_dim=1792, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 512), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_BN(nn.Module):
    def __init__(self, input_dim=1792, hidden_dim=512, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(hidden_dim, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_BN_2(nn.Module):
    def __init__(self, input_dim=1792, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 256),
            nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_BN_3(nn.Module):
    def __init__(self, input_dim=1792, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(512, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_LL(nn.Module):
    def __init__(self, input_dim=1792, hidden_dim=512, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(hidden_dim, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_LL2(nn.Module):
    def __init__(self, input_dim=1792, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, 512), nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(512, 256),
            nn.LeakyReLU(0.1), nn.Linear(256, num_classes))
    def forward(self, x):
        return self.net(x)

class MLP_LL3(nn.Module):
    def __init__(self, input_dim=1792, num_classes=7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, 1024), nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(1024, 512),
            nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(512, 128), nn.LeakyReLU(0.1),
            nn.Linear(128, num_classes))
    def forward(self, x):
        return self.net(x)

class AttentionWithMLP(nn.Module):
    def __init__(self, cnn_dim=1024, clip_dim=768, attn_dim=256, mlp_hidden=512, num_classes=7):
        super().__init__()
        self.query_proj = nn.Linear(clip_dim, attn_dim)
        self.key_proj = nn.Linear(cnn_dim, attn_dim)
        self.value_proj = nn.Linear(cnn_dim, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(attn_dim, mlp_hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(mlp_hidden, num_classes))
    def forward(self, x):
        cnn_feat = x[:, :1024]
        clip_feat = x[:, 1024:]
        Q = self.query_proj(clip_feat)
        K = self.key_proj(cnn_feat)
        V = self.value_proj(cnn_feat)
        attn_score = torch.softmax((Q * K).sum(dim=1, keepdim=True), dim=1)
        context = attn_score * V
        out = self.mlp(context)
        return out

class SelfAttentionMLP(nn.Module):
    def __init__(self, input_dim=1792, attn_dim=256, mlp_hidden=512, num_classes=7):
        super().__init__()
        self.q_proj = nn.Linear(input_dim, attn_dim)
        self.k_proj = nn.Linear(input_dim, attn_dim)
        self.v_proj = nn.Linear(input_dim, attn_dim)
        self.attn_fc = nn.Linear(attn_dim, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(attn_dim, mlp_hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(mlp_hidden, num_classes))
    def forward(self, x):
        x = x.unsqueeze(1)
        Q = self.q_proj(x)
        K = self.k_proj(x)
        V = self.v_proj(x)
        attn_weights = torch.softmax(torch.matmul(Q, K.transpose(-2, -1)) / (Q.shape[-1] ** 0.5), dim=-1)
        context = torch.matmul(attn_weights, V).squeeze(1)
        out = self.mlp(self.attn_fc(context))
        return out

class CrossAttentionMLP(nn.Module):
    def __init__(self, cnn_dim=1024, clip_dim=768, attn_dim=256, mlp_hidden=512, num_classes=7):
        super().__init__()
        self.attn_dim = attn_dim
        self.query_proj = nn.Linear(clip_dim, attn_dim)
        self.key_proj = nn.Linear(cnn_dim, attn_dim)
        self.value_proj = nn.Linear(cnn_dim, attn_dim)
        self.attn_fc = nn.Linear(attn_dim, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(attn_dim, mlp_hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(mlp_hidden, num_classes))
    def forward(self, x):
        cnn_feat = x[:, :1024]
        clip_feat = x[:, 1024:]
        Q = self.query_proj(clip_feat).unsqueeze(1)
        K = self.key_proj(cnn_feat).unsqueeze(1)
        V = self.value_proj(cnn_feat).unsqueeze(1)
        attn_weights = torch.softmax(torch.matmul(Q, K.transpose(-2, -1)) / (self.attn_dim ** 0.5), dim=-1)
        context = torch.matmul(attn_weights, V).squeeze(1)
        out = self.mlp(self.attn_fc(context))
        return out
'''
ORIGINAL_CLASS = {
    "mlp1": "MLP", "mlp2": "MLP_2Layer", "mlp3": "MLP_3Layer", "mlp1_bn": "MLP_BN", "mlp2_bn": "MLP_BN_2",
    "mlp3_bn": "MLP_BN_3", "mlp1_leaky": "MLP_LL", "mlp2_leaky": "MLP_LL2", "mlp3_leaky": "MLP_LL3",
    "original_attention": "AttentionWithMLP", "original_self_attention": "SelfAttentionMLP",
    "original_cross_attention": "CrossAttentionMLP",
}


@pytest.fixture(scope="module")
def original_classes():
    namespace = {"nn": nn, "torch": torch}
    exec(ORIGINAL_SOURCE, namespace)
    return namespace


def test_every_original_class_is_covered():
    assert sorted(ORIGINAL_CLASS) == list_heads("original")


@pytest.mark.parametrize("name", sorted(ORIGINAL_CLASS))
def test_original_heads_match_the_original_code(name, original_classes):
    """At the original's widths (1024 + 768): same parameter names and shapes, the same
    initialisation from the same seed, and bit-identical outputs with the same weights."""
    torch.manual_seed(0)
    original = original_classes[ORIGINAL_CLASS[name]]().eval()
    ours = _head(name, 1024, 768, seed=0)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in original.state_dict().items()}
    assert all(torch.equal(original.state_dict()[k], v) for k, v in ours.state_dict().items())
    ours.load_state_dict(original.state_dict())   # an original .pt file loads as it is
    x = _x(6, seed=1, cnn_dim=1024, text_dim=768)
    x = x / x.norm(dim=1, keepdim=True)           # the original's concat-then-L2 inputs
    with torch.no_grad():
        assert torch.equal(ours(x), original(x))


def test_mlp_bn_is_the_trained_dropout_0_2_version():
    assert _head("mlp1_bn").net[3].p == 0.2
    assert _head("mlp1_bn", dropout=0.5).net[3].p == 0.5


# ------------------------------------------------------------------------------------------------
# The degenerate attention of the original heads
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ORIGINAL_ATTENTION)
def test_original_attention_weights_are_exactly_one(name):
    head = _head(name)
    for seed, scale in [(0, 1.0), (1, 10.0), (2, 1e4)]:
        w = attention_weights(head, scale * _x(50, seed=seed))
        assert w.numel() == 50 and torch.all(w == 1.0)


@pytest.mark.parametrize("name", BLIND_TO_TEXT)
def test_original_attention_and_cross_attention_ignore_the_caption(name):
    head = _head(name)
    x = _x(20, seed=3)
    with torch.no_grad():
        reference = head(x)
        for replacement in (torch.randn(20, TEXT_DIM), torch.zeros(20, TEXT_DIM), torch.full((20, TEXT_DIM), 1e6),
                            -1e6 * torch.rand(20, TEXT_DIM), x[torch.randperm(20), CNN_DIM:]):
            other = x.clone()
            other[:, CNN_DIM:] = replacement
            assert torch.equal(head(other), reference)
        other = x.clone()
        other[:, :CNN_DIM] = torch.randn(20, CNN_DIM)
        assert not torch.allclose(head(other), reference)       # the CNN half does matter


def test_original_self_attention_sees_the_caption():
    head = _head("original_self_attention")
    x = _x(20, seed=3)
    with torch.no_grad():
        reference = head(x)
        for replacement in (torch.randn(20, TEXT_DIM), torch.zeros(20, TEXT_DIM)):
            other = x.clone()
            other[:, CNN_DIM:] = replacement
            assert not torch.allclose(head(other), reference)


# ------------------------------------------------------------------------------------------------
# The fusion heads' weights and gates
# ------------------------------------------------------------------------------------------------

def test_token_attention_weights_vary_across_samples():
    head = _head("token_attention", d=32, heads=4, layers=2)
    x = _x(30, seed=4)
    w = attention_weights(head, x)
    assert w.shape == (30, 3)
    assert torch.allclose(w.sum(1), torch.ones(30), atol=1e-5) and (w > 0).all()
    assert (w[:, 1:].std(0) > 1e-3).all()                        # over the CNN and the text token
    per_head = head.attention_weights(x, layer=0, average_heads=False)
    assert per_head.shape == (30, 4, 3)
    with torch.no_grad():                                        # the weights' path is the forward's
        assert head(x).shape == (30, C)


@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_gate_values_are_in_0_1(gate):
    head = _head("gated", d=32, gate=gate)
    g = gate_values(head, 5 * _x(30, seed=5))
    assert g.shape == (30, 32 if gate == "vector" else 1)
    assert ((g > 0) & (g < 1)).all() and g.std() > 0
    with pytest.raises(ConfigError, match="gate"):
        create_head("gated", CNN_DIM, TEXT_DIM, gate="matrix")
    with pytest.raises(ConfigError, match="attention weights"):
        attention_weights(head, _x())


# ------------------------------------------------------------------------------------------------
# Learning: the label is in the text only; shuffling the text across samples must destroy it.
# ------------------------------------------------------------------------------------------------

SMALL = {"token_attention": {"d": 32, "heads": 4}, "gated": {"d": 32, "hidden_dim": 64},
         "mlp1": {"hidden_dim": 64}, "original_attention": {"attn_dim": 32, "mlp_hidden": 64}}


def _text_labelled(n_per_class, seed):
    """Text = one-hot(label) + noise, CNN = noise: only the caption carries the label."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat(n_per_class)
    text = torch.zeros(len(y), TEXT_DIM)
    text[torch.arange(len(y)), y] = 1.0
    text += 0.3 * torch.randn(len(y), TEXT_DIM, generator=g)
    return torch.cat([torch.randn(len(y), CNN_DIM, generator=g), text], dim=1), y


@pytest.fixture(scope="module")
def text_task():
    x_train, y_train = _text_labelled(40, seed=11)
    x_test, y_test = _text_labelled(20, seed=12)
    shuffled = x_train.clone()
    shuffled[:, CNN_DIM:] = x_train[torch.randperm(len(x_train), generator=torch.Generator().manual_seed(13)), CNN_DIM:]
    return x_train, y_train, shuffled, x_test, y_test


def _train(name, x, y, steps=60, lr=1e-2):
    head = _head(name, seed=0, **SMALL[name]).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(head(x), y).backward()
        optimizer.step()
    return head.eval()


def _accuracy(head, x, y):
    with torch.no_grad():
        return (head(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", ["gated", "token_attention", "mlp1"])
def test_heads_learn_from_paired_text_only(name, text_task):
    x_train, y_train, shuffled, x_test, y_test = text_task
    paired = _train(name, x_train, y_train)
    assert _accuracy(paired, x_train, y_train) > 0.9
    assert _accuracy(paired, x_test, y_test) > 0.75
    broken = _train(name, shuffled, y_train)
    assert _accuracy(broken, x_test, y_test) < 0.5


def test_original_attention_cannot_use_the_text(text_task):
    x_train, y_train, _, x_test, y_test = text_task
    head = _train("original_attention", x_train, y_train)
    assert _accuracy(head, x_test, y_test) < 0.5


# ------------------------------------------------------------------------------------------------
# Late fusion
# ------------------------------------------------------------------------------------------------

def _probabilities(n_per_class=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per_class)
    perfect = np.full((len(y), C), 0.4 / (C - 1))
    perfect[np.arange(len(y)), y] = 0.6                   # right, but under-confident
    noise = rng.dirichlet(np.ones(C), size=len(y))         # unrelated to the label
    return y, perfect, noise


def test_late_fusion_weights_the_informative_source():
    y, perfect, noise = _probabilities(seed=0)
    text_good = LateFusion().fit(noise, perfect, y)
    assert text_good.weight <= 0.2
    cnn_good = LateFusion().fit(perfect, noise, y)
    assert cnn_good.weight >= 0.8
    for fitted in (text_good, cnn_good):
        assert len(fitted.temperatures) == 2 and all(t > 0 for t in fitted.temperatures)
        assert list(fitted.scores["weight"]) == pytest.approx(np.linspace(0, 1, 11))
    assert cnn_good.temperatures[0] < 1 < cnn_good.temperatures[1]   # sharpen the right one, flatten the noise
    y_test, perfect_test, noise_test = _probabilities(n_per_class=10, seed=1)
    p = cnn_good.predict_proba(perfect_test, noise_test)
    assert p.shape == (len(y_test), C)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert (cnn_good.predict(perfect_test, noise_test) == y_test).mean() > 0.9


def test_late_fusion_weight_ends_mean_one_source():
    y, perfect, noise = _probabilities(seed=2)
    only_cnn = LateFusion(weights=[1.0]).fit(perfect, noise, y)
    np.testing.assert_allclose(only_cnn.predict_proba(perfect, noise),
                               temperature_scale(perfect, only_cnn.temperatures[0]))
    only_text = LateFusion(weights=[0.0]).fit(perfect, noise, y)
    np.testing.assert_allclose(only_text.predict_proba(perfect, noise),
                               temperature_scale(noise, only_text.temperatures[1]))


def test_late_fusion_accepts_a_smoothed_vote_and_checks_inputs():
    y, perfect, _ = _probabilities(seed=3)
    vote = np.full((len(y), C), 0.1 / (C - 1))
    vote[np.arange(len(y)), (y + 1) % C] = 0.9             # a vote that is always wrong
    fitted = LateFusion().fit(perfect, vote, y)
    assert fitted.weight >= 0.8
    with pytest.raises(RuntimeError, match="fit"):
        LateFusion().predict_proba(perfect, vote)
    with pytest.raises(ValueError, match="same shape"):
        LateFusion().fit(perfect, vote[:, :3], y)
    with pytest.raises(ValueError, match="labels"):
        LateFusion().fit(perfect, vote, y[:-1])
    with pytest.raises(ConfigError, match="weights"):
        LateFusion(weights=[0.5, 2.0])
    assert isinstance(fitted.scores, pd.DataFrame)
