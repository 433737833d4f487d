"""Layers that are subclasses of nn.Linear / nn.Conv2d with their own constructor or forward, and peft failing
while it injects: adapted exactly, skipped with one note, or refused in one line — never a traceback from peft."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from IPython.core.error import UsageError
from torch import nn

import lora_nb
from lora_nb.core import find
from lora_nb.errors import InjectionError, LoraNBWarning, TargetError


class SameConv2d(nn.Conv2d):
    """TensorFlow-style "same" padding for a known image size: pads in forward, then convolves with padding=0."""

    def __init__(self, cin, cout, k, image_size, stride=1):
        super().__init__(cin, cout, k, stride=stride, padding=0)
        total = max((-(-image_size // stride) - 1) * stride + k - image_size, 0)
        self.pads = [total // 2, total - total // 2] * 2

    def forward(self, x):
        return F.conv2d(F.pad(x, self.pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TaggedLinear(nn.Linear):
    """A Linear whose constructor needs one more argument."""

    def __init__(self, cin, cout, tag):
        super().__init__(cin, cout)
        self.tag = tag


class StdConv2d(nn.Conv2d):
    """Standardizes its weight in forward: W enters non-linearly, so no LoRA on it can be exact."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class Net(nn.Module):
    def __init__(self, std=False, groups=1):
        super().__init__()
        self.conv1 = SameConv2d(3, 8, 3, image_size=9, stride=2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.std = StdConv2d(8, 8, 3, padding=1) if std else nn.Identity()
        self.head = TaggedLinear(8, 4, tag="logits")

    def forward(self, x):
        return self.head(self.std(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def net(**kwargs):
    torch.manual_seed(0)
    return Net(**kwargs).eval()


IMAGES = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))


def snapshot(model):
    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def unchanged(model, before):
    now = snapshot(model)
    return now.keys() == before.keys() and all(torch.equal(now[n][0], t) and now[n][1] == g
                                               for n, (t, g) in before.items())


def randomize_b(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g))


def test_subclasses_whose_constructor_peft_cannot_call_are_adapted_exactly():
    model = net()
    before = snapshot(model)
    with torch.no_grad():
        base_out = model(IMAGES)
    lora_nb.attach(model, r=2)
    assert sorted(find(model).records["default"]["options"]["targets"]) == ["conv1", "conv2", "head"]
    randomize_b(model)
    with torch.no_grad():
        adapted = model(IMAGES)
        delta = model.conv1.get_delta_weight("default")
        reference = SameConv2d(3, 8, 3, image_size=9, stride=2)
        reference.load_state_dict({"weight": before["conv1.weight"][0] + delta, "bias": before["conv1.bias"][0]})
        # the factors see the padded input: the adapted layer is the subclass's forward with W + ΔW
        torch.testing.assert_close(model.conv1(IMAGES), reference(IMAGES), rtol=1e-5, atol=1e-5)
        assert (adapted - base_out).abs().max() > 0.1
        lora_nb.disable(model)
        assert torch.equal(model(IMAGES), base_out)  # off: bit-identical
        lora_nb.enable(model)
        assert torch.equal(model(IMAGES), adapted)
        lora_nb.merge(model)
        torch.testing.assert_close(model(IMAGES), adapted, rtol=1e-4, atol=1e-4)
        lora_nb.unmerge(model)
        assert torch.equal(model(IMAGES), adapted)
    spectra = lora_nb.spectra(model)
    dense = torch.linalg.svdvals(delta.reshape(8, -1).double()).numpy()
    np.testing.assert_allclose(spectra["conv1"], dense[:2], rtol=1e-5)
    model(IMAGES).sum().backward()  # the routed factor A learns through the subclass's forward
    assert model.conv1.lora_A["default"].weight.grad.abs().sum() > 0
    lora_nb.detach(model)
    assert unchanged(model, before)
    assert (type(model.conv1), type(model.head)) == (SameConv2d, TaggedLinear)


def test_adapter_on_subclasses_saves_and_loads_into_a_fresh_model(tmp_path):
    model = net()
    lora_nb.attach(model, r=2)
    randomize_b(model)
    path = lora_nb.save(model, tmp_path / "ad")
    fresh = net()
    lora_nb.load(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(IMAGES), model(IMAGES))


def test_subclass_whose_forward_transforms_its_weight_is_skipped_with_one_note_or_refused_by_name():
    model = net(std=True)
    before = snapshot(model)
    with pytest.warns(LoraNBWarning, match=r"^skipped 1 layer\(s\) of class StdConv2d: its own forward is not "
                                           r"linear in its weight") as notes:
        lora_nb.attach(model, r=2)
    assert len(notes) == 1
    assert sorted(find(model).records["default"]["options"]["targets"]) == ["conv1", "conv2", "head"]
    lora_nb.detach(model)
    with pytest.raises(TargetError, match=r"^LoRA cannot adapt `std` \(StdConv2d\) exactly: its own forward"):
        lora_nb.attach(model, r=2, targets="std")
    assert find(model) is None and unchanged(model, before)


@pytest.mark.filterwarnings("ignore:LoRA adapter added to ConvNd layer with groups")
def test_peft_failing_mid_injection_is_one_line_and_leaves_the_model_unchanged(ip):
    model = net(groups=2)  # peft refuses a rank that the conv's groups do not divide, after wrapping conv1
    before = snapshot(model)
    with pytest.raises(InjectionError, match=r"^peft cannot adapt `conv2` \(Conv2d\): Targeting a Conv2d with "
                                             r"groups=2 and rank 3.*; the model is unchanged"):
        lora_nb.attach(model, r=3, targets="conv1,conv2")
    assert find(model) is None and unchanged(model, before) and type(model.conv1) is SameConv2d
    assert not hasattr(model, "peft_config")
    lora_nb.attach(model, r=2, targets="conv1,head")  # an existing session: the second adapter fails half-way
    randomize_b(model)
    session_before = snapshot(model)
    with pytest.raises(InjectionError, match=r"^peft cannot adapt `conv2`"):
        lora_nb.attach(model, r=3, targets="conv1,conv2", name="second")
    assert find(model).adapters == ["default"] and unchanged(model, session_before)
    assert type(model.conv2) is nn.Conv2d and list(model.conv1.lora_A) == ["default"]
    ip.user_ns["model"] = model
    with pytest.raises(UsageError, match=r"^peft cannot adapt `conv2` \(Conv2d\)") as error:
        ip.run_line_magic("lora", "attach model --r 3 --targets conv1,conv2 --name third")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("options", [{"dilation": 2, "padding": 2}, {"padding": 1, "padding_mode": "reflect"},
                                     {"padding": 1, "padding_mode": "circular"}],
                         ids=["dilated", "reflect", "circular"])
def test_convs_whose_dilation_or_padding_mode_peft_factors_ignore_get_factors_that_see_the_weights_input(options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, **options), nn.ReLU(), nn.Conv2d(4, 4, 1))
    before = snapshot(model)
    with torch.no_grad():
        base_out = model(IMAGES)
    lora_nb.attach(model, r=2)
    randomize_b(model)
    with torch.no_grad():
        adapted = model(IMAGES)  # peft's own factors: a shape error (dilated) or zero-padded input (reflect, circular)
        lora_nb.merge(model)
        torch.testing.assert_close(model(IMAGES), adapted, rtol=1e-5, atol=1e-5)  # = the conv with W + ΔW
        lora_nb.disable(model)
        assert torch.equal(model(IMAGES), base_out)
    lora_nb.detach(model)
    assert unchanged(model, before) and type(model[0]) is nn.Conv2d
