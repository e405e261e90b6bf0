"""Runnable examples of the public student API in other people's training loops."""
