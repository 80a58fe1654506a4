"""One module per HTTP resource; `base` holds what they share."""
