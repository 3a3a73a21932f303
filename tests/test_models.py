import pytest
import torch

from codecnn.errors import CodecnnError
from codecnn.models import RDB, RDN, RDNConfig, build_model, make_config, register_model
from codecnn.models.complexity import count_macs, describe_complexity, rdb_macs_per_pixel


def test_shapes_and_identity_at_initialisation():
    torch.manual_seed(0)
    for cfg in (RDNConfig(), RDNConfig(2, 3, 8, 16, qp_map=True), RDNConfig(2, 3, 8, 16, separable=True, head="5x5")):
        m = build_model("rdn", cfg)
        x = torch.rand(2, 1, 132, 132)
        y = m(x, torch.tensor([22, 37]))
        assert y.shape == (2, 1, 128, 128)
        assert torch.equal(y, x[:, :, 2:-2, 2:-2])  # zero-initialised last conv: exactly the identity


def test_training_signal_reaches_every_layer():
    torch.manual_seed(0)
    m = RDN(num_blocks=2, num_layers=2, growth=8, num_features=8)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    x, t = torch.rand(2, 1, 36, 36), torch.rand(2, 1, 32, 32)
    for _ in range(3):
        opt.zero_grad()
        (m(x) - t).abs().mean().backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("f,g,layers", [(32, 24, 6), (32, 16, 6), (8, 4, 1), (16, 12, 3)])
def test_rdb_macs_equal_the_closed_form(f, g, layers):
    """RDB = ``layers`` dense 3x3 layers + a 1x1 fusion: the notes' n - 1 = layers, il = ol = f."""
    macs = count_macs(RDB(f, g, layers), torch.zeros(1, f, 16, 16)) / 256
    assert macs == rdb_macs_per_pixel(f, g, layers + 1, f)
    # the notes' own closed form writes g*(n-1)*n/2 for the quadratic term: one g*g*(n-1) too many
    n = layers + 1
    notes = 9 * ((n - 1) * f * g + g * g * (n - 1) * n // 2) + (f + (n - 1) * g) * f
    assert notes - macs == 9 * g * g * (n - 1)


def test_rdn_macs_per_pixel_from_the_formula():
    cfg = RDNConfig()  # 32 features, 4 RDBs, 6 layers, growth 24
    f, b = cfg.num_features, cfg.num_blocks
    per_pixel = describe_complexity(build_model("rdn", cfg))["macs_per_pixel"]
    s = 128 * 128
    head = (9 * 1 * f * 130 * 130 + 9 * f * f * s) / s
    body = b * rdb_macs_per_pixel(f, cfg.growth, cfg.num_layers + 1, f)
    tail = b * f * f + 9 * f * f + 9 * f * 1
    assert per_pixel == pytest.approx(head + body + tail, rel=1e-12)
    assert 500e3 < per_pixel < 550e3


def test_registry_and_config_checks():
    with pytest.raises(ValueError, match="already registered"):
        register_model("rdn", RDNConfig)(type("X", (), {}))
    with pytest.raises(CodecnnError, match="--blocks must be a positive integer"):
        RDNConfig(num_blocks=0)
    with pytest.raises(CodecnnError, match="unknown model"):
        build_model("unet", {})
    with pytest.raises(CodecnnError, match="unknown fields"):
        make_config("rdn", {"blocks": 4})
    assert build_model("rdn", {"num_blocks": 1, "num_layers": 1, "growth": 4, "num_features": 4}).config.num_blocks == 1
