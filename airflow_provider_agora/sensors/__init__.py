"""Sensors of the Agora Cloud Recording provider."""
