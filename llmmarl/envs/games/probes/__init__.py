"""Probe games: tiny games with known optimal policies, one per part of the RL machinery (``docs/learning.md``).

Each probe is a package here with its game and its optimal bot; ``common.py`` holds the neutral words and the
per-seed draw of which word pays.
"""
