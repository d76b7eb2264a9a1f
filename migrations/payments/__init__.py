"""The payments database's migration history."""
