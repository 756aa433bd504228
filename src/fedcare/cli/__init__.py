"""The fedcare command line."""
