"""The shipping database's migration history."""
