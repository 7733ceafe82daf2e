"""Monitoring: drift of incoming fields, live skill of served forecasts, the retrain trigger."""
