"""One router per area of the API; app.py mounts them."""
