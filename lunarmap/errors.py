"""lunarmap's exceptions: one base class, and messages that say how to fix the problem.

Every error a user can cause with bad input derives from :class:`LunarmapError`; the CLI turns
these into a one-paragraph message and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class LunarmapError(Exception):
    """Base class of every lunarmap error caused by input, data or configuration."""


class CRSError(LunarmapError):
    """The raster or vector CRS is missing, not a Moon CRS, or not the one expected."""


class UnitsError(LunarmapError):
    """Values look like the wrong unit (e.g. elevation in km where metres are required)."""


class NoDataError(LunarmapError):
    """The raster (or the requested part of it) holds no valid data."""


class InputFileError(LunarmapError):
    """A file is missing, unreadable, corrupt or of an unsupported format."""


class SitesError(LunarmapError):
    """Candidate sites cannot be read or have no usable geometry/coordinates."""


class CoordinateError(LunarmapError):
    """A coordinate is invalid or falls outside the raster."""


class ChipSizeError(LunarmapError):
    """A chip/chunk is smaller than the halo (overlap) a computation needs."""


class ModelWeightsError(LunarmapError):
    """Model weights are missing, corrupt (sha256 mismatch) or do not match their model card."""


class RankingError(LunarmapError):
    """The ranking cannot be computed (e.g. no site has valid features, labels malformed)."""


class EphemerisError(LunarmapError):
    """SPICE kernels missing, or a time outside the kernels' coverage."""
