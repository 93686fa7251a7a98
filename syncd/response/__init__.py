"""Response Plays, Custom Incident Actions, status updates and subscribers."""
