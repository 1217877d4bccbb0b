"""Probe ``probe_speaker_listener``: only the speaker sees the goal, only the listener acts, and only a MESSAGE can
carry the goal across. A failure points at messages as actions and credit through the channel."""

from llmmarl.envs.bots import BotSpec
from llmmarl.envs.games.probes.speaker_listener.game import SpeakerListener, SpeakerOptimal
from llmmarl.envs.registry import EnvSpec

SUMMARY = "Probe: a speaker sees the goal word and sends one symbol; the listener, who acts, must pick the goal."
BOTS = (BotSpec("probe_speaker_optimal", SpeakerOptimal, "sends the goal's symbol (probe_speaker_listener speaker)"),)
GAME = EnvSpec("probe_speaker_listener", SpeakerListener, SUMMARY, kind="cooperative", bots=BOTS)

__all__ = ["GAME", "SpeakerListener", "SpeakerOptimal"]
