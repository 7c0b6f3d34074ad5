"""The terminal review: the screen, its store, edits and text."""
