"""What the tests share: generated catalogues, a logged-in app home, a real browser and server."""
