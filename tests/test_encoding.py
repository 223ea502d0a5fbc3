"""Encoding u -> settings: inside the limits, differentiable, channel layout, fixed settings."""

import pytest
import torch
from pydantic import ValidationError

from labpgt.encoding import Encoding, EncodingSpec
from labpgt.errors import UserError
from labpgt.setting_bounds import SettingBounds


def test_default_affine_maps_unit_interval_onto_bench_limits_and_clamps():
    enc = Encoding()
    assert enc.dims_per_channel == 2 and enc.input_dim == 2
    u = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [5.0, -7.0]], dtype=torch.float64)
    s = enc(u)
    assert s.shape == (4, 1, 3) and s.dtype == torch.float64
    torch.testing.assert_close(s[0, 0], torch.tensor([2.0e9, -40.0, 1.8], dtype=torch.float64))
    torch.testing.assert_close(s[1, 0], torch.tensor([2.3e9, 0.0, 1.8], dtype=torch.float64))
    torch.testing.assert_close(s[2, 0], torch.tensor([2.15e9, -20.0, 1.8], dtype=torch.float64))
    torch.testing.assert_close(s[3, 0], torch.tensor([2.3e9, -40.0, 1.8], dtype=torch.float64))
    SettingBounds().check(s.reshape(-1, 3))


def test_sigmoid_cannot_leave_the_range_and_passes_gradients():
    bounds = SettingBounds()
    spec = EncodingSpec(map="sigmoid", ranges={"drive_hz": (2.05e9, 2.25e9)})
    enc = Encoding(spec, bounds)
    u = (torch.randn(64, 2, dtype=torch.float64) * 50).requires_grad_()
    s = enc(u)
    assert (s[..., 0] >= 2.05e9).all() and (s[..., 0] <= 2.25e9).all()
    bounds.check(s.detach().reshape(-1, 3))
    u2 = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    enc(u2)[..., 1].sum().backward()
    # d/du of lo + span*sigmoid(g*u) at u=0 is span*g/4 = 40 dB * 2 / 4
    torch.testing.assert_close(u2.grad[:, 1], torch.full((3,), 20.0, dtype=torch.float64))
    assert (u2.grad[:, 0] == 0).all()


def test_affine_gradcheck_and_zero_gradient_when_clamped():
    enc = Encoding(EncodingSpec(ranges={"drive_hz": (2.1e9, 2.2e9), "drive_dbm": (-30.0, -5.0)}))
    u = (torch.rand(4, 2, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: enc(x) / 1e6, (u,))
    u_out = torch.tensor([[3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    enc(u_out)[..., 0].sum().backward()
    assert u_out.grad[0, 0] == 0


def test_channels_are_channel_major_with_fixed_values_per_channel():
    spec = EncodingSpec(channels=3, driven=("drive_hz",), fixed={"bias_a": (1.6, 1.8, 2.0)})
    enc = Encoding(spec)
    assert enc.input_dim == 3
    u = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64)
    s = enc(u)
    assert s.shape == (1, 3, 3)
    torch.testing.assert_close(
        s[0, :, 0], torch.tensor([2.0e9, 2.15e9, 2.3e9], dtype=torch.float64)
    )
    torch.testing.assert_close(s[0, :, 1], torch.full((3,), -10.0, dtype=torch.float64))
    torch.testing.assert_close(s[0, :, 2], torch.tensor([1.6, 1.8, 2.0], dtype=torch.float64))
    # any leading shape
    assert enc(torch.zeros(5, 7, 3, dtype=torch.float64)).shape == (5, 7, 3, 3)


def test_bias_can_be_driven_and_inverse_round_trips():
    spec = EncodingSpec(channels=2, driven=("bias_a", "drive_hz"), ranges={"bias_a": (1.5, 2.0)})
    for kind in ("affine", "sigmoid"):
        enc = Encoding(spec.model_copy(update={"map": kind}))
        u = torch.rand(6, 4, dtype=torch.float64) * 1.8 - 0.9
        torch.testing.assert_close(enc.inverse(enc(u)), u)
    # driven columns are always in setting order: drive_hz then bias_a
    assert EncodingSpec(driven=("bias_a", "drive_hz")).driven == ("drive_hz", "bias_a")


def test_bad_configuration_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match="unknown setting 'gain'"):
        EncodingSpec(driven=("gain",))
    with pytest.raises(ValidationError, match="driven"):
        EncodingSpec(driven=())
    with pytest.raises(UserError, match=r"range of drive_dbm .* inside the bench limits"):
        Encoding(EncodingSpec(ranges={"drive_dbm": (-50.0, 0.0)}))
    with pytest.raises(UserError, match=r"bias_a=3 A is outside"):
        Encoding(EncodingSpec(fixed={"bias_a": 3.0}))
    with pytest.raises(UserError, match="one per channel"):
        Encoding(EncodingSpec(channels=2, fixed={"bias_a": (1.0, 1.5, 2.0)}))
    with pytest.raises(UserError, match="expects u with 4 values"):
        Encoding(EncodingSpec(channels=2))(torch.zeros(3, 3))


def test_encoding_adds_nothing_to_a_state_dict():
    assert Encoding(EncodingSpec(channels=4)).state_dict() == {}
