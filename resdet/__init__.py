"""resdet: ResNet backbones, Faster/Mask R-CNN with FPN, classification and detection training."""
import os as _os

# albumentations checks the network for a newer release at import time unless this is set.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
