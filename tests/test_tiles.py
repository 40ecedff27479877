"""The embedded DEMs share one vertical datum (heights above the 1 737 400 m Moon sphere)."""

from pathlib import Path

import numpy as np
import pytest

from lunarmap.horizon import far_field_offset
from lunarmap.io import open_dem

TILES = Path(__file__).resolve().parents[1] / "tiles"


@pytest.mark.parametrize("name", ["shackleton_ridge_lola10m_200m_51km.tif", "shackleton_zoom_lola10m_40m_10km.tif"])
def test_shackleton_tiles_sit_on_the_sphere_like_the_lola_ldem(name):
    # the simulator's tangent-plane heights were 133 m (200 m tile) / 40 m (40 m tile) below the
    # LDEM and diverged as rho^2 / 2R; restored by scripts/restore_tile_curvature.py
    tile = open_dem(TILES / name, chunks=None)
    ldem = open_dem(TILES / "lola_ldem80s_480m_south_pole_250km.tif", chunks=None)
    assert abs(far_field_offset(tile, ldem)) < 5.0
    # no residual bowl: the offset is the same near the pole and far from it
    x, y = np.meshgrid(tile.x.values, tile.y.values)
    rho = np.hypot(x, y)
    near_pole = tile.where(rho < np.percentile(rho, 30))
    far_out = tile.where(rho > np.percentile(rho, 70))
    d_near = far_field_offset(near_pole, ldem)
    d_far = far_field_offset(far_out, ldem)
    assert abs(d_far - d_near) < 15.0
