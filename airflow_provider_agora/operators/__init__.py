"""Operators of the Agora Cloud Recording provider."""
