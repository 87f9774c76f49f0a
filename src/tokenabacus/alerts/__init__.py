"""Alerting: detectors that decide when usage is abnormal, and notifiers that deliver the alert."""
