"""CTC decoders (emg2qwerty API): greedy and prefix beam search with a character KenLM."""

from emg2qwerty_ssm.decoding.base import Decoder
from emg2qwerty_ssm.decoding.beam import CTCBeamDecoder
from emg2qwerty_ssm.decoding.greedy import CTCGreedyDecoder
from emg2qwerty_ssm.decoding.lm import CharLM, LMError

__all__ = ["CTCBeamDecoder", "CTCGreedyDecoder", "CharLM", "Decoder", "LMError"]
