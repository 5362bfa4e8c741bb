"""Hooks of the Agora Cloud Recording provider."""
