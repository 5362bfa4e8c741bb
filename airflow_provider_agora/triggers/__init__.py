"""Triggers of the Agora Cloud Recording provider."""
