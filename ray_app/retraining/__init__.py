"""Automated retraining: new snapshots → train → offline gate → register → canary → promote/rollback."""
