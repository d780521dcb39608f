"""Fake providers and fake vendor servers used by the tests."""
