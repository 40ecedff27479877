"""Crater U-Net: inputs, shipped weights and their card, prediction contract, a known detection."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lunarmap import synth
from lunarmap.errors import ChipSizeError, ModelWeightsError
from lunarmap.models import (
    INPUT_CHANNELS,
    WEIGHTS_PATH,
    CraterModel,
    build_crater_net,
    crater_inputs,
    file_sha256,
    load_crater_model,
)

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return load_crater_model()


@pytest.fixture()
def weights_copy(tmp_path):
    w = tmp_path / "crater_unet.safetensors"
    shutil.copy(WEIGHTS_PATH, w)
    shutil.copy(WEIGHTS_PATH.with_suffix(".json"), w.with_suffix(".json"))
    return w


# --- inputs -----------------------------------------------------------------------------------

def test_inputs_shape_dtype_and_standardisation():
    z = synth.fractal_terrain(64, 50.0, seed=0) + 1500.0
    x = crater_inputs(z.astype(np.float32), 50.0)
    assert x.shape == (len(INPUT_CHANNELS), 64, 64) and x.dtype == np.float32
    assert abs(x[0].mean()) < 1e-5 and x[0].std() == pytest.approx(1.0, rel=1e-4)
    # per-chip normalisation: a datum shift changes nothing
    np.testing.assert_allclose(crater_inputs(z - 3000.0, 50.0), x, atol=1e-5)


def test_inputs_known_slope_and_hillshade():
    gsd = 10.0
    yy, xx = np.mgrid[0:32, 0:32].astype(float)
    # plane rising to the east at 10 degrees
    z = np.tan(np.radians(10.0)) * gsd * xx
    x = crater_inputs(z, gsd)
    assert np.allclose(x[1], 10.0 / 45.0, atol=1e-5)
    # plane facing the light (normal tilted 45 deg towards azimuth 315 = north-west) is fully lit.
    # rows increase southwards, so "rising to the south-east" = +x and +row.
    t = np.tan(np.radians(45.0)) / np.sqrt(2.0) * gsd
    z = t * xx + t * yy
    hs = (crater_inputs(z, gsd)[2] + 1) / 2
    assert np.allclose(hs, 1.0, atol=1e-5)
    # the opposite plane is in shadow
    hs = (crater_inputs(-z, gsd)[2] + 1) / 2
    assert np.allclose(hs, 0.0, atol=1e-5)


def test_inputs_nan_safe():
    z = synth.fractal_terrain(32, 50.0, seed=1)
    z[5:9, 5:9] = np.nan
    x = crater_inputs(z, 50.0)
    assert np.isfinite(x).all()
    assert np.all(x[:, 5:9, 5:9] == 0)
    assert np.all(crater_inputs(np.full((32, 32), np.nan), 50.0) == 0)
    assert np.all(crater_inputs(np.full((32, 32), 7.0), 50.0)[:2] == 0)
    with pytest.raises(ChipSizeError):
        crater_inputs(np.zeros((2, 32, 32)), 50.0)
    with pytest.raises(ValueError):
        crater_inputs(z, 0.0)


# --- shipped weights and card -------------------------------------------------------------------

def test_shipped_weights_match_card(model):
    card = json.loads(WEIGHTS_PATH.with_suffix(".json").read_text())
    assert file_sha256(WEIGHTS_PATH) == card["weights_sha256"]
    assert WEIGHTS_PATH.stat().st_size < 8e6
    assert isinstance(model, CraterModel) and not model.net.training
    assert model.in_channels == 3 == card["input"]["in_channels"]
    assert card["input"]["channels"] == list(INPUT_CHANNELS)
    assert isinstance(model.receptive_field_px, int) and 32 <= model.receptive_field_px
    for key in ("architecture", "training_data", "training", "metrics_synthetic_val", "license", "references"):
        assert key in card
    assert card["architecture"]["encoder_weights"] is None


def test_corrupted_weights_raise(weights_copy):
    data = bytearray(weights_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights_copy.write_bytes(bytes(data))
    with pytest.raises(ModelWeightsError, match="sha256"):
        load_crater_model(weights_copy)


def test_missing_weights_or_card_raise(tmp_path, weights_copy):
    with pytest.raises(ModelWeightsError, match="not found"):
        load_crater_model(tmp_path / "nope.safetensors")
    weights_copy.with_suffix(".json").unlink()
    with pytest.raises(ModelWeightsError, match="card"):
        load_crater_model(weights_copy)


def test_card_architecture_mismatch_raises(weights_copy):
    cpath = weights_copy.with_suffix(".json")
    card = json.loads(cpath.read_text())
    card["architecture"]["decoder_channels"] = [8, 8, 8, 8, 8]
    cpath.write_text(json.dumps(card))
    with pytest.raises(ModelWeightsError, match="architecture"):
        load_crater_model(weights_copy)


def test_truncated_file_with_matching_sha_raises(weights_copy):
    weights_copy.write_bytes(b"not a safetensors file")
    cpath = weights_copy.with_suffix(".json")
    card = json.loads(cpath.read_text())
    card["weights_sha256"] = file_sha256(weights_copy)
    cpath.write_text(json.dumps(card))
    with pytest.raises(ModelWeightsError):
        load_crater_model(weights_copy)


def test_build_net_has_no_pretrained_download():
    net = build_crater_net(3)
    assert sum(p.numel() for p in net.parameters()) < 2_000_000


# --- predict ------------------------------------------------------------------------------------

def test_predict_shape_dtype_range(model):
    chips = np.stack([crater_inputs(synth.fractal_terrain(64, 100.0, seed=s), 100.0) for s in range(2)])
    p = model.predict(chips)
    assert p.shape == (2, 64, 64) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    chips[0, :, :4, :4] = np.nan
    assert np.isfinite(model.predict(chips)).all()


@pytest.mark.parametrize("shape", [(1, 3, 100, 64), (1, 3, 64, 48), (3, 64, 64), (1, 2, 64, 64)])
def test_predict_bad_shapes(model, shape):
    with pytest.raises(ChipSizeError) as e:
        model.predict(np.zeros(shape, np.float32))
    if len(shape) == 4 and shape[1] == 3:
        assert "np.pad" in str(e.value)


def test_detects_large_fresh_crater(model):
    """A 70-px fresh crater on mild terrain: rim probability on the ring >> background."""
    craters = pd.DataFrame({"x_px": [128.0], "y_px": [120.0], "diameter_px": [70.0]})
    chip = synth.synth_crater_chip(256, 200.0, seed=4, craters=craters, noise_m=1.0, tilt_deg=1.0)
    p = model.predict(crater_inputs(chip.elevation, chip.gsd)[None])[0]
    yy, xx = np.indices(p.shape)
    r = np.hypot(xx - 128.0, yy - 120.0)
    ring = np.abs(r - 35.0) <= 1.5
    background = r > 35.0 * 2.5
    assert p[ring].mean() > 0.3
    assert p[ring].mean() > 5 * p[background].mean()
    # most of the ring is found
    from scipy.ndimage import binary_dilation
    hit = binary_dilation(p >= 0.5, iterations=1)
    assert hit[chip.rim_mask.astype(bool)].mean() > 0.5
