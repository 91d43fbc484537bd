"""Hydra multirun support: callbacks for the sweep's parent run and summary, interrupts across
jobs, warm joblib workers, and launcher detection."""
