"""The shared body and its assembly with modality nets (MultiModel §2.4–2.5) and
autoregressive decoding.

``encoder.py``, ``mixer.py`` and ``decoder.py`` hold the three parts of the body;
``multimodel.py`` assembles them with the modality nets and task tokens; ``decoding.py`` and
``incremental.py`` run the decoder one token at a time for greedy and beam search.
"""

from multimodel.model.decoding import beam_search, greedy_search
from multimodel.model.incremental import IncrementalState
from multimodel.model.multimodel import DecoderOutput, EncoderOutput, ModelOutput, MultiModel

__all__ = [
    "DecoderOutput",
    "EncoderOutput",
    "IncrementalState",
    "ModelOutput",
    "MultiModel",
    "beam_search",
    "greedy_search",
]
