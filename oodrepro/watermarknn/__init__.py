"""WatermarkNN (Adi et al., USENIX Security 2018): an ownership watermark made by training
the model to memorise a secret trigger set, its verification, and removal attacks.

Embedding appends a few trigger images to every training batch (one joint cross-entropy,
no trigger augmentation, shared BatchNorm statistics; `embedding`). The owner commits to every
trigger image and label with a salted SHA-256 hash at embedding time; verification first opens
the commitments, so a tampered key or trigger set is refused before any model is queried
(`commitments`). The ownership threshold comes from clean "null" models: how often they agree
with the secret labels by chance (`verification`). Attacks fine-tune without triggers (FTLL,
FTAL, RTLL, RTAL) or prune weights by magnitude (`attacks`); `tables` holds the summary's
attack table. Spec: docs/watermarknn.md.

The names the workflow scripts use are importable from here.
"""

from .attacks import ATTACKS, Attacker, attack, attacker_share, prune, pruning_curve
from .commitments import VerificationError, commit, load_keys, make_keys, open_commitments
from .embedding import TriggerMixer, embed
from .tables import attack_table
from .verification import ownership_threshold, trigger_accuracy, verify, verify_owners

__all__ = [
    "ATTACKS",
    "Attacker",
    "TriggerMixer",
    "VerificationError",
    "attack",
    "attack_table",
    "attacker_share",
    "commit",
    "embed",
    "load_keys",
    "make_keys",
    "open_commitments",
    "ownership_threshold",
    "prune",
    "pruning_curve",
    "trigger_accuracy",
    "verify",
    "verify_owners",
]
