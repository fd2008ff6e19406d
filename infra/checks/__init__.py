"""Custom checkov policies for what this template promises and checkov has no built-in check for.

Run with ``checkov --framework bicep --external-checks-dir infra/checks``.
"""
