"""Neural networks and their shipped weights (see each module's model card).

``crater_*``: the crater-rim U-Net (:mod:`lunarmap.models.craters`).
"""

from lunarmap.models.craters import (  # noqa: F401
    CHIP_MULTIPLE,
    INPUT_CHANNELS,
    WEIGHTS_PATH,
    CraterModel,
    build_crater_net,
    crater_inputs,
    file_sha256,
    load_crater_model,
)
