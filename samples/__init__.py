"""Samples to start from: ``samples.tools`` holds the tools of the README's walkthrough."""
